//! Standard Webhooks signatures: `webhook-signature` holds one or more
//! space-separated `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`,
//! keyed with the base64 part of a `whsec_...` secret. Comparison is
//! constant-time ([`sinks::secrets::constant_time_eq`]), and every candidate
//! secret and signature is tried, so timing does not reveal which part
//! failed. At most [`MAX_SIGNATURES`] signatures of a header are tried.
//!
//! Pure (no `crate::` paths): the fuzz targets compile this file as it is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sinks::Secret;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the {0} s tolerance")]
    Stale(u64),
    #[error("no signature matches")]
    NoMatch,
}

/// The key bytes of a `whsec_<base64>` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or("webhook secret must start with whsec_")?;
    let key = STANDARD
        .decode(b64)
        .map_err(|e| format!("webhook secret is not base64 after whsec_: {e}"))?;
    if key.len() < 16 || key.len() > 64 {
        return Err(format!("webhook secret must hold 16 to 64 bytes, has {}", key.len()));
    }
    Ok(key)
}

/// A new random secret (24 bytes from the operating system's random
/// source), `whsec_` + base64.
pub fn generate_secret() -> String {
    let bytes: [u8; 24] = sinks::secrets::random_bytes();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Signatures tried per header; Standard Webhooks senders send one per
/// valid secret (two during a rotation).
pub const MAX_SIGNATURES: usize = 16;

/// The `webhook-timestamp` header as unix seconds.
pub fn parse_timestamp(timestamp: &str) -> Result<i64, SignatureError> {
    timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)
}

/// The decoded `v1` signatures of a `webhook-signature` header (others
/// and undecodable ones skipped), at most [`MAX_SIGNATURES`].
pub fn parse_signatures(header: &str) -> Vec<Vec<u8>> {
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter(|s| !s.is_empty())
        .take(MAX_SIGNATURES)
        .filter_map(|s| STANDARD.decode(s).ok())
        .filter(|s| !s.is_empty())
        .collect()
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// `v1,<base64>` for the given secret and message.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = secret_key(secret)?;
    let sig = mac(&key, id, &timestamp.to_string(), body).finalize().into_bytes();
    Ok(format!("v1,{}", STANDARD.encode(sig)))
}

/// Verifies a webhook against every currently valid secret.
pub fn verify<'a>(
    secrets: impl Iterator<Item = &'a Secret>,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let ts = parse_timestamp(timestamp)?;
    if now_secs.abs_diff(ts) > tolerance_secs {
        return Err(SignatureError::Stale(tolerance_secs));
    }
    let candidates = parse_signatures(signatures);
    let mut ok = false;
    for secret in secrets {
        let Ok(key) = secret_key(secret.expose()) else { continue };
        let expected = mac(&key, id, timestamp.trim(), body).finalize().into_bytes();
        for c in &candidates {
            ok |= sinks::secrets::constant_time_eq(c, &expected);
        }
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secrets(s: &[&str]) -> Vec<Secret> {
        s.iter().map(|s| Secret::new(*s)).collect()
    }

    #[test]
    fn published_test_vector_signs_and_verifies() {
        assert_eq!(sign(SECRET, ID, TS, BODY.as_bytes()).unwrap(), EXPECTED);
        let s = secrets(&[SECRET]);
        verify(s.iter(), ID, &TS.to_string(), EXPECTED, BODY.as_bytes(), TS, 300).unwrap();
    }

    #[test]
    fn tampering_empty_signatures_and_stale_timestamps_fail() {
        let s = secrets(&[SECRET]);
        let ts = TS.to_string();
        assert_eq!(
            verify(s.iter(), ID, &ts, EXPECTED, br#"{"test": 2432232315}"#, TS, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(s.iter(), ID, &ts, "v1,", BODY.as_bytes(), TS, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                s.iter(),
                ID,
                &ts,
                "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                BODY.as_bytes(),
                TS,
                300
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(s.iter(), "msg_other", &ts, EXPECTED, BODY.as_bytes(), TS, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(s.iter(), ID, &ts, EXPECTED, BODY.as_bytes(), TS + 301, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(s.iter(), ID, &ts, EXPECTED, BODY.as_bytes(), TS - 301, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(s.iter(), ID, "yesterday", EXPECTED, BODY.as_bytes(), TS, 300),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn several_signatures_and_secrets() {
        let other = generate_secret();
        let s = secrets(&[&other, SECRET]);
        let header = format!("v1,AAAA {} v1,bm90IGl0", EXPECTED);
        verify(s.iter(), ID, &TS.to_string(), &header, BODY.as_bytes(), TS, 300).unwrap();
        assert!(secret_key(&generate_secret()).is_ok());
        assert_ne!(generate_secret(), generate_secret());
        assert!(secret_key("plain").is_err());
        assert!(secret_key("whsec_!!!").is_err());
    }

    #[test]
    fn header_parsing_skips_what_is_not_a_v1_signature_and_caps_the_count() {
        assert_eq!(parse_signatures("v1,AAAA v2,AAAA v1, v1,!!! x"), vec![vec![0u8, 0, 0]]);
        assert!(parse_signatures("").is_empty());
        let many = vec![EXPECTED; 100].join(" ");
        assert_eq!(parse_signatures(&many).len(), MAX_SIGNATURES);
        assert_eq!(parse_timestamp(" 1614265330 "), Ok(TS));
        assert_eq!(parse_timestamp("1e9"), Err(SignatureError::BadTimestamp));
        assert_eq!(
            parse_timestamp("99999999999999999999"),
            Err(SignatureError::BadTimestamp)
        );
    }
}
