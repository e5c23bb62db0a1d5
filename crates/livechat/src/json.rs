//! The server's own values written as JSON, loudly. serde_json fails only where a `Serialize`
//! impl refuses (a map with keys JSON cannot have, an error of its own): none of today's types
//! do, but if one did it would be a bug, so it is never an empty or made-up body in silence. A
//! value that cannot be written is logged (with its type), counted
//! (`livechat_frames_unencodable_total`) and returned as a typed error; the caller says what
//! goes out instead (an error frame, a failed call, a refused write).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// `value` as a JSON tree.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<serde_json::Value, Unencodable> {
    serde_json::to_value(value).map_err(|error| unencodable::<T>(error))
}

/// Values that could not be written as JSON, since the process started.
static UNENCODABLE: AtomicU64 = AtomicU64::new(0);

/// A value of the server's own that could not be written as JSON (already logged and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server could not write a {value} as JSON: {reason}")]
pub struct Unencodable {
    /// The Rust type that refused.
    pub value: &'static str,
    pub reason: String,
}

/// `value` as JSON bytes.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Unencodable> {
    serde_json::to_vec(value).map_err(|error| unencodable::<T>(error))
}

/// `value` as a JSON string.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, Unencodable> {
    serde_json::to_string(value).map_err(|error| unencodable::<T>(error))
}

/// Values that could not be written as JSON since the process started (the metric).
pub fn unencodable_values() -> u64 {
    UNENCODABLE.load(Ordering::Relaxed)
}

fn unencodable<T: ?Sized>(error: serde_json::Error) -> Unencodable {
    UNENCODABLE.fetch_add(1, Ordering::Relaxed);
    let value = std::any::type_name::<T>();
    tracing::error!(%error, value, "a value could not be written as JSON (a bug)");
    Unencodable {
        value,
        reason: error.to_string(),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Serialises to an error, as a map with keys JSON cannot have would.
    pub struct Unwritable;

    impl Serialize for Unwritable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no JSON for this"))
        }
    }

    #[test]
    fn a_value_that_cannot_be_written_is_a_typed_error_and_counted() {
        let before = unencodable_values();
        let error = to_vec(&Unwritable).unwrap_err();
        assert!(error.value.ends_with("Unwritable"), "{error}");
        assert!(error.reason.contains("no JSON for this"), "{error}");
        assert!(to_string(&Unwritable).is_err());
        assert!(to_value(&Unwritable).is_err());
        // Other tests may count too: at least these three.
        assert!(unencodable_values() >= before + 3);
        assert_eq!(to_string(&[1, 2]).unwrap(), "[1,2]");
    }
}
