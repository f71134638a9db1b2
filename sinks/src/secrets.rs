//! Secret material: new secrets come from the operating system's
//! cryptographic random source, and every comparison of a secret, token,
//! signature or token hash goes through [`constant_time_eq`].
//!
//! One helper, so there is one place to get right: both sides are hashed
//! with SHA-256 first (a presented value of any length costs the same and
//! its length is not revealed), then the digests are compared with
//! `subtle`, whose comparison does not branch on the data.

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `presented` equals `expected`, in time that depends on neither
/// value (only on their lengths, through SHA-256's block count).
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(presented), Sha256::digest(expected));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// `N` bytes from the operating system's cryptographic random source
/// (`getrandom(2)` on Linux).
///
/// # Panics
/// When the operating system cannot provide randomness: no secret can be
/// made then, and a weaker source must not be used in its place.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut out)
        .expect("the operating system's random source failed; no secret can be generated");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_match_and_any_difference_does_not() {
        assert!(constant_time_eq(b"tf_0123456789abcdef", b"tf_0123456789abcdef"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"tf_0123456789abcdef", b"tf_0123456789abcdeg"));
        assert!(!constant_time_eq(b"tf_0123456789abcdef", b"tf_0123456789abcde"));
        assert!(!constant_time_eq(b"tf_0123456789abcdef", b""));
        assert!(!constant_time_eq(b"a", b"A"));
        // A prefix is not a match, whichever side is longer.
        assert!(!constant_time_eq(b"secret", b"secret-and-more"));
        assert!(!constant_time_eq(b"secret-and-more", b"secret"));
    }

    #[test]
    fn random_bytes_are_not_uuid_shaped_and_differ() {
        // UUIDv4 bytes have fixed version and variant bits (byte 6 high
        // nibble 4, byte 8 top bits 10): over 64 draws of 32 bytes, OS
        // randomness breaks that shape with near certainty (1 - 2^-384).
        let draws: Vec<[u8; 32]> = (0..64).map(|_| random_bytes::<32>()).collect();
        let uuid_shaped = |b: &[u8; 32]| b[6] >> 4 == 4 && b[8] >> 6 == 2 && b[22] >> 4 == 4 && b[24] >> 6 == 2;
        assert!(!draws.iter().all(uuid_shaped));
        let mut unique = draws.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), draws.len(), "64 draws of 256 bits never repeat");
        assert!(draws.iter().all(|d| d.iter().any(|&x| x != 0)));
    }
}
