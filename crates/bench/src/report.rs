//! Results: latency histograms (microseconds) and the summary a run prints, for people (text)
//! and for scripts (one JSON line).

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// A histogram as (value, count) pairs, to travel from a worker to the parent.
pub fn export(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|value| (value.value_iterated_to(), value.count_at_value()))
        .collect()
}

pub fn import(into: &mut Histogram<u64>, counts: &[(u64, u64)]) {
    for &(value, count) in counts {
        let _ = into.record_n(value.max(1), count);
    }
}

/// Percentiles in milliseconds.
pub fn latency_json(histogram: &Histogram<u64>) -> Value {
    let ms = |value: u64| value as f64 / 1000.0;
    json!({
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p90_ms": ms(histogram.value_at_quantile(0.90)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "p999_ms": ms(histogram.value_at_quantile(0.999)),
        "max_ms": ms(histogram.max()),
        "samples": histogram.len(),
    })
}

/// What a scenario made of its raw results.
pub struct Summary {
    pub parameters: Value,
    pub results: Map<String, Value>,
    /// Why the scenario could not run, when it measured nothing (no connection, no delivery,
    /// no answer): the summary is still printed, and the run exits non-zero.
    pub failure: Option<String>,
}

/// Prints the human summary (one `key: value` line each), then the JSON line.
pub fn print(scenario: &str, summary: &Summary) {
    println!("== livechat-bench {scenario}");
    for (key, value) in &summary.results {
        println!("  {key}: {value}");
    }
    let mut line = Map::new();
    line.insert("scenario".into(), json!(scenario));
    line.insert("parameters".into(), summary.parameters.clone());
    line.extend(summary.results.clone());
    println!("{}", Value::Object(line));
}

/// `failed` attempts, with the first one's error when there is one.
pub fn failures(failed: u64, first_error: Option<&str>) -> String {
    match first_error {
        Some(error) => format!("{failed} failed, the first with: {error}"),
        None => format!("{failed} failed"),
    }
}
