//! Encryption at rest for tenants' secrets (the SDP token and the webhook
//! secrets), with the key in `TICKETFLOW_MASTER_KEY`.
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value; the tenant id
//! and the field name are authenticated as associated data, so a sealed
//! value copied into another tenant's row (or another column) does not
//! open. Stored form: `tfenc:v1:` + base64(nonce ‖ ciphertext ‖ tag).
//! Values without the prefix are read as plaintext (rows written before a
//! master key was set), and are sealed the next time the tenant is written.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::TryRngCore;

const PREFIX: &str = "tfenc:v1:";
const NONCE: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("TICKETFLOW_MASTER_KEY must be 32 bytes as 64 hex digits or base64 (got {0} bytes after decoding)")]
    KeyLength(usize),
    #[error("TICKETFLOW_MASTER_KEY is neither 64 hex digits nor base64")]
    KeyEncoding,
    #[error("the store holds encrypted secrets of tenant '{0}' but TICKETFLOW_MASTER_KEY is not set")]
    NoKey(String),
    #[error("secret '{field}' of tenant '{tenant}' does not decrypt with TICKETFLOW_MASTER_KEY (wrong key, or the value was altered)")]
    Open { tenant: String, field: String },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// Seals and opens secret columns; without a key it stores plaintext.
pub struct Sealer {
    key: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.key.is_some() {
            "Sealer(key)"
        } else {
            "Sealer(none)"
        })
    }
}

impl Sealer {
    /// No master key: secrets are stored as given.
    pub fn none() -> Self {
        Sealer { key: None }
    }

    /// From the master key's text: 64 hex digits or base64 of 32 bytes.
    pub fn from_key_text(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| SealError::KeyEncoding))
                .collect::<Result<Vec<u8>, _>>()?
        } else {
            STANDARD.decode(text).map_err(|_| SealError::KeyEncoding)?
        };
        if bytes.len() != 32 {
            return Err(SealError::KeyLength(bytes.len()));
        }
        let key = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(Sealer { key: Some(key) })
    }

    /// `TICKETFLOW_MASTER_KEY` when set (and not empty), else no key.
    pub fn from_env() -> Result<Self, SealError> {
        match std::env::var("TICKETFLOW_MASTER_KEY") {
            Ok(k) if !k.trim().is_empty() => Sealer::from_key_text(&k),
            _ => Ok(Sealer::none()),
        }
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    fn aad(tenant_id: &str, field: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(tenant_id.len() + field.len() + 1);
        aad.extend_from_slice(tenant_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(field.as_bytes());
        aad
    }

    /// The stored form of `plaintext` (sealed when there is a key).
    pub fn seal(&self, tenant_id: &str, field: &str, plaintext: &str) -> Result<String, SealError> {
        let Some(key) = &self.key else {
            return Ok(plaintext.to_string());
        };
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|e| SealError::Random(e.to_string()))?;
        let aad = Self::aad(tenant_id, field);
        let sealed = key
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Random("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// The plaintext of a stored value.
    pub fn open(&self, tenant_id: &str, field: &str, stored: &str) -> Result<String, SealError> {
        let Some(body) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| SealError::NoKey(tenant_id.to_string()))?;
        let fail = || SealError::Open {
            tenant: tenant_id.to_string(),
            field: field.to_string(),
        };
        let bytes = STANDARD.decode(body).map_err(|_| fail())?;
        if bytes.len() < NONCE {
            return Err(fail());
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let aad = Self::aad(tenant_id, field);
        let plain = key
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }
}

/// Whether a stored value is sealed (for tests and `tenants list`).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// A tenant's secret columns as stored.
pub(crate) struct StoredSecrets {
    pub sdp_token: String,
    pub webhook_secret: String,
    pub previous_webhook_secret: Option<String>,
}

/// A tenant's secret columns as read.
pub(crate) struct OpenedSecrets {
    pub sdp_token: crate::Secret,
    pub webhook_secret: crate::Secret,
    pub previous_webhook_secret: Option<crate::Secret>,
}

fn store_error(e: SealError) -> super::StoreError {
    super::StoreError::Rejected(e.to_string())
}

/// The SDP credential column's plaintext: the token, or with Zoho OAuth
/// the client id, client secret, refresh token and accounts URL as one JSON
/// value, sealed as a whole like the token.
fn sdp_credential_text(t: &super::Tenant) -> std::borrow::Cow<'_, str> {
    match (&t.sdp.auth, &t.sdp.oauth) {
        (crate::servicedesk::SdpAuth::ZohoOAuth, Some(o)) => o.to_stored().into(),
        _ => t.sdp.token.expose().into(),
    }
}

/// Splits the opened SDP credential column into (token, OAuth credentials)
/// by the tenant's auth kind.
pub(crate) fn sdp_credentials(
    auth: crate::servicedesk::SdpAuth,
    opened: crate::Secret,
) -> Result<(crate::Secret, Option<crate::servicedesk::ZohoOAuth>), super::StoreError> {
    match auth {
        crate::servicedesk::SdpAuth::ZohoOAuth => {
            let o = crate::servicedesk::ZohoOAuth::from_stored(opened.expose()).map_err(super::StoreError::Corrupt)?;
            Ok((crate::Secret::new(""), Some(o)))
        }
        _ => Ok((opened, None)),
    }
}

pub(crate) fn seal_tenant_secrets(sealer: &Sealer, t: &super::Tenant) -> Result<StoredSecrets, super::StoreError> {
    let id = &t.tenant_id;
    Ok(StoredSecrets {
        sdp_token: sealer
            .seal(id, "sdp_token", &sdp_credential_text(t))
            .map_err(store_error)?,
        webhook_secret: sealer
            .seal(id, "webhook_secret", t.webhook_secrets.current.expose())
            .map_err(store_error)?,
        previous_webhook_secret: t
            .webhook_secrets
            .previous
            .as_ref()
            .map(|p| sealer.seal(id, "previous_webhook_secret", p.expose()))
            .transpose()
            .map_err(store_error)?,
    })
}

pub(crate) fn open_tenant_secrets(
    sealer: &Sealer,
    tenant_id: &str,
    sdp_token: &str,
    webhook_secret: &str,
    previous: Option<&str>,
) -> Result<OpenedSecrets, super::StoreError> {
    let open = |field: &str, v: &str| {
        sealer
            .open(tenant_id, field, v)
            .map(crate::Secret::new)
            .map_err(store_error)
    };
    Ok(OpenedSecrets {
        sdp_token: open("sdp_token", sdp_token)?,
        webhook_secret: open("webhook_secret", webhook_secret)?,
        previous_webhook_secret: previous.map(|p| open("previous_webhook_secret", p)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seals_and_opens_bound_to_tenant_and_field() {
        let s = Sealer::from_key_text(KEY).unwrap();
        let sealed = s.seal("acme", "sdp_token", "tok-123").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("tok-123"));
        assert_ne!(
            sealed,
            s.seal("acme", "sdp_token", "tok-123").unwrap(),
            "fresh nonce per value"
        );
        assert_eq!(s.open("acme", "sdp_token", &sealed).unwrap(), "tok-123");
        assert!(matches!(
            s.open("globex", "sdp_token", &sealed),
            Err(SealError::Open { .. })
        ));
        assert!(matches!(
            s.open("acme", "webhook_secret", &sealed),
            Err(SealError::Open { .. })
        ));
        let other = Sealer::from_key_text(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(matches!(
            other.open("acme", "sdp_token", &sealed),
            Err(SealError::Open { .. })
        ));
        assert!(matches!(
            Sealer::none().open("acme", "sdp_token", &sealed),
            Err(SealError::NoKey(_))
        ));
        // Rows written before the key was set still read.
        assert_eq!(s.open("acme", "sdp_token", "plain").unwrap(), "plain");
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        assert_eq!(Sealer::from_key_text("abcd").unwrap_err(), SealError::KeyLength(3));
        assert_eq!(
            Sealer::from_key_text("not base64 !!").unwrap_err(),
            SealError::KeyEncoding
        );
        assert_eq!(
            Sealer::from_key_text(&STANDARD.encode([1u8; 16])).unwrap_err(),
            SealError::KeyLength(16)
        );
    }
}
