//! Fernet tokens (the `cryptography` package's format, which `channels_redis` uses for
//! `symmetric_encryption_keys`): `0x80 | timestamp (8 bytes, big-endian) | IV (16) | AES-128-CBC
//! ciphertext (PKCS#7) | HMAC-SHA256 of all that (32)`, base64url with padding. A key is what
//! `channels_redis` makes of the app's setting: the SHA-256 of its UTF-8 bytes, the first half
//! signing, the second half encrypting.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const VERSION: u8 = 0x80;
/// `cryptography` refuses tokens stamped further than this in the future.
const MAX_CLOCK_SKEW_SECONDS: u64 = 60;
const HEADER: usize = 1 + 8 + 16;
const MAC: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FernetError {
    #[error("not a Fernet token")]
    Malformed,
    #[error("the token was made with none of the keys")]
    WrongKey,
    #[error("the token is older than the layer's expiry")]
    Expired,
}

#[derive(Clone)]
pub struct Fernet {
    signing: [u8; 16],
    encryption: [u8; 16],
}

impl Fernet {
    /// The key `channels_redis` derives from one entry of `symmetric_encryption_keys`.
    pub fn from_setting(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut signing = [0; 16];
        let mut encryption = [0; 16];
        signing.copy_from_slice(&digest[..16]);
        encryption.copy_from_slice(&digest[16..]);
        Self {
            signing,
            encryption,
        }
    }

    /// A token for `plain`, stamped `now` (seconds since the Unix epoch).
    pub fn encrypt(&self, plain: &[u8], now: u64) -> Vec<u8> {
        let mut iv = [0u8; 16];
        // Without the system's randomness there is no safe IV; a zero IV still decrypts but
        // reveals equal plaintexts, so this is worth a loud failure rather than a silent one.
        if let Err(error) = getrandom::fill(&mut iv) {
            tracing::error!(%error, "no randomness for a Fernet IV");
        }
        let ciphertext = cbc::Encryptor::<aes::Aes128>::new(&self.encryption.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        let mut token = Vec::with_capacity(HEADER + ciphertext.len() + MAC);
        token.push(VERSION);
        token.extend_from_slice(&now.to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&ciphertext);
        let mac = self.mac(&token);
        token.extend_from_slice(&mac);
        URL_SAFE.encode(token).into_bytes()
    }

    fn mac(&self, signed: &[u8]) -> [u8; MAC] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.signing)
            .expect("HMAC takes keys of any length");
        mac.update(signed);
        mac.finalize().into_bytes().into()
    }
}

/// Decrypts `token` with the first of `keys` that made it (as `MultiFernet`), refusing one older
/// than `ttl` seconds at `now`.
pub fn decrypt(
    keys: &[Fernet],
    token: &[u8],
    ttl: Option<u64>,
    now: u64,
) -> Result<Vec<u8>, FernetError> {
    let raw = URL_SAFE.decode(token).map_err(|_| FernetError::Malformed)?;
    if raw.len() < HEADER + 16 + MAC
        || raw[0] != VERSION
        || !(raw.len() - HEADER - MAC).is_multiple_of(16)
    {
        return Err(FernetError::Malformed);
    }
    let (signed, mac) = raw.split_at(raw.len() - MAC);
    let key = keys
        .iter()
        .find(|key| {
            let mut check = <Hmac<Sha256> as Mac>::new_from_slice(&key.signing)
                .expect("HMAC takes keys of any length");
            check.update(signed);
            check.verify_slice(mac).is_ok()
        })
        .ok_or(FernetError::WrongKey)?;
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&signed[1..9]);
    let stamp = u64::from_be_bytes(stamp);
    if stamp > now + MAX_CLOCK_SKEW_SECONDS || ttl.is_some_and(|ttl| stamp + ttl < now) {
        return Err(FernetError::Expired);
    }
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&signed[9..HEADER]);
    cbc::Decryptor::<aes::Aes128>::new(&key.encryption.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&signed[HEADER..])
        .map_err(|_| FernetError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Python's `cryptography` (50.0.2) as `channels_redis` makes its Fernet:
    /// `Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"the layer key").digest()))
    /// ._encrypt_from_parts(b"hello", 1700000000, bytes(range(16)))`.
    const PYTHON_TOKEN: &str = "gAAAAABlU_EAAAECAwQFBgcICQoLDA0OD09qSpcocHSTyUA0TaDuDPeV4bZCU0daf0bPiYMcepukqJ9DqVRyeGutJibZTqFUmQ==";

    #[test]
    fn reads_what_python_wrote_and_the_other_way_round() {
        let key = Fernet::from_setting("the layer key");
        let other = Fernet::from_setting("another key");
        let keys = [other.clone(), key.clone()];
        assert_eq!(
            decrypt(&keys, PYTHON_TOKEN.as_bytes(), None, 1_700_000_001).unwrap(),
            b"hello"
        );
        assert_eq!(
            decrypt(&keys, PYTHON_TOKEN.as_bytes(), Some(70), 1_700_000_100),
            Err(FernetError::Expired)
        );
        assert_eq!(
            decrypt(&[other], PYTHON_TOKEN.as_bytes(), None, 1_700_000_001),
            Err(FernetError::WrongKey)
        );
        let token = key.encrypt(b"\x82\xa4type", 1_700_000_000);
        assert_eq!(
            decrypt(&keys, &token, Some(70), 1_700_000_010).unwrap(),
            b"\x82\xa4type"
        );
        assert_eq!(
            decrypt(&keys, b"gAAAAA", None, 0),
            Err(FernetError::Malformed)
        );
    }
}
