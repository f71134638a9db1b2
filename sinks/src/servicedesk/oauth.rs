//! Zoho OAuth for cloud ServiceDesk Plus: a tenant's client id, client
//! secret and refresh token buy hour-long access tokens from the Zoho
//! accounts server (`POST {accounts_url}/oauth/v2/token?refresh_token=..
//! &client_id=..&client_secret=..&grant_type=refresh_token`).
//!
//! Access tokens are cached per credential set until shortly before they
//! expire. One refresh runs at a time per credential set: concurrent callers
//! wait for it and share its token (Zoho limits how often a refresh token
//! may be used, so a burst of jobs must not become a burst of refreshes).
//! A token SDP refuses (401) is refreshed once, and only if no other caller
//! refreshed it meanwhile. Tokens and secrets never reach a log line, an
//! error message or a span: they travel as [`Secret`] and the token request's
//! URL (which carries them) is stripped from transport errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::SdpError;
use crate::Secret;

/// Zoho's accounts server for the US data centre; other data centres
/// (`accounts.zoho.eu`, `.in`, `.com.au`, `.jp`, ...) are set per tenant.
pub const DEFAULT_ZOHO_ACCOUNTS_URL: &str = "https://accounts.zoho.com";

/// How long before its stated expiry a cached access token is replaced,
/// so a call never starts with a token about to lapse in flight.
pub const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// One tenant's Zoho OAuth credentials (self client or server-based app).
#[derive(Debug, Clone)]
pub struct ZohoOAuth {
    /// The Zoho accounts server, e.g. `https://accounts.zoho.eu`.
    pub accounts_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
}

impl ZohoOAuth {
    /// The stored form (sealed as a whole in the tenant's `sdp_token`
    /// column when a master key is set).
    pub fn to_stored(&self) -> String {
        json!({
            "accounts_url": self.accounts_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
            "refresh_token": self.refresh_token.expose(),
        })
        .to_string()
    }

    /// Reads the stored form; the error names the missing field, never a value.
    pub fn from_stored(text: &str) -> Result<Self, String> {
        let v: Value =
            serde_json::from_str(text).map_err(|_| "Zoho OAuth credentials are not the expected JSON".to_string())?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("Zoho OAuth credentials lack {k}"))
        };
        Ok(ZohoOAuth {
            accounts_url: field("accounts_url").unwrap_or_else(|_| DEFAULT_ZOHO_ACCOUNTS_URL.to_string()),
            client_id: field("client_id")?,
            client_secret: Secret::new(field("client_secret")?),
            refresh_token: Secret::new(field("refresh_token")?),
        })
    }

    /// The cache key: a digest, so the map never holds the secrets.
    fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.accounts_url.as_str(),
            self.client_id.as_str(),
            self.client_secret.expose(),
            self.refresh_token.expose(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

struct AccessToken {
    token: Secret,
    /// When the cached token stops being used (expiry minus the margin).
    use_until: Instant,
}

/// Cached access tokens, one single-flight slot per credential set.
#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<AccessToken>>>>>,
}

impl TokenCache {
    fn slot(&self, key: String) -> Arc<tokio::sync::Mutex<Option<AccessToken>>> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// A usable access token. `refused`: the token SDP just refused; a
    /// cached token equal to it is refreshed, a different one (another
    /// caller refreshed meanwhile) is returned as it is.
    pub(crate) async fn get(
        &self,
        http: &reqwest::Client,
        creds: &ZohoOAuth,
        refused: Option<&Secret>,
    ) -> Result<Secret, SdpError> {
        let slot = self.slot(creds.cache_key());
        let mut cached = slot.lock().await;
        if let Some(t) = cached.as_ref() {
            let refused_this = refused.is_some_and(|r| r == &t.token);
            if !refused_this && Instant::now() < t.use_until {
                return Ok(t.token.clone());
            }
        }
        *cached = None;
        let (token, expires_in) = refresh(http, creds).await?;
        let margin = TOKEN_EXPIRY_MARGIN.min(expires_in / 2);
        *cached = Some(AccessToken {
            token: token.clone(),
            use_until: Instant::now() + expires_in.saturating_sub(margin),
        });
        Ok(token)
    }
}

fn refused(http_status: u16, message: String) -> SdpError {
    SdpError::Unauthorized {
        http_status,
        sdp_code: None,
        message,
    }
}

/// One refresh: the new access token and its lifetime.
async fn refresh(http: &reqwest::Client, creds: &ZohoOAuth) -> Result<(Secret, Duration), SdpError> {
    let url = format!("{}/oauth/v2/token", creds.accounts_url.trim_end_matches('/'));
    // Form body, not the query string: URLs end up in proxies' access logs.
    let resp = http
        .post(url)
        .form(&[
            ("refresh_token", creds.refresh_token.expose()),
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.expose()),
            ("grant_type", "refresh_token"),
        ])
        .send()
        .await
        .map_err(|e| SdpError::Transport(format!("Zoho OAuth token endpoint: {}", e.without_url())))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| SdpError::Transport(format!("Zoho OAuth token endpoint: {}", e.without_url())))?;
    if status.as_u16() == 429 {
        return Err(SdpError::RateLimited {
            http_status: 429,
            retry_after: None,
        });
    }
    if status.is_server_error() {
        return Err(SdpError::Server {
            http_status: status.as_u16(),
            message: "Zoho OAuth token endpoint failed".into(),
        });
    }
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    // Zoho answers refused refreshes with `{"error": "invalid_code"}`,
    // often with HTTP 200. Its error words are safe to show; the body is not
    // echoed (it could hold a token).
    let error = parsed.as_ref().and_then(|v| v.get("error")).and_then(Value::as_str);
    let token = parsed
        .as_ref()
        .and_then(|v| v.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    match (token, error) {
        (Some(token), None) if status.is_success() => {
            let expires_in = parsed
                .as_ref()
                .and_then(|v| v.get("expires_in"))
                .and_then(|e| e.as_u64().or_else(|| e.as_str().and_then(|s| s.parse().ok())))
                .unwrap_or(3600);
            Ok((Secret::new(token), Duration::from_secs(expires_in)))
        }
        (_, Some(error)) => {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || " _-.".contains(*c))
                .take(80)
                .collect();
            Err(refused(
                status.as_u16(),
                format!("Zoho OAuth token refresh refused: {error}"),
            ))
        }
        _ if status.is_success() => Err(SdpError::Malformed {
            http_status: status.as_u16(),
            message: "Zoho OAuth token endpoint answered without an access_token".into(),
        }),
        _ => Err(refused(
            status.as_u16(),
            format!("Zoho OAuth token refresh refused (HTTP {})", status.as_u16()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> ZohoOAuth {
        ZohoOAuth {
            accounts_url: "https://accounts.zoho.eu".into(),
            client_id: "1000.ABC".into(),
            client_secret: Secret::new("client-secret-value"),
            refresh_token: Secret::new("1000.refresh-token-value"),
        }
    }

    #[test]
    fn debug_never_shows_the_secrets() {
        let shown = format!("{:?}", creds());
        assert!(!shown.contains("client-secret-value"), "{shown}");
        assert!(!shown.contains("refresh-token-value"), "{shown}");
        assert!(shown.contains("1000.ABC"));
        assert!(!creds().cache_key().contains("refresh"));
    }

    #[test]
    fn stored_form_round_trips_and_names_missing_fields() {
        let c = creds();
        let back = ZohoOAuth::from_stored(&c.to_stored()).unwrap();
        assert_eq!(back.cache_key(), c.cache_key());
        assert_eq!(back.refresh_token.expose(), "1000.refresh-token-value");
        let e = ZohoOAuth::from_stored(r#"{"client_id":"x","client_secret":"s"}"#).unwrap_err();
        assert_eq!(e, "Zoho OAuth credentials lack refresh_token");
        let d = ZohoOAuth::from_stored(r#"{"client_id":"x","client_secret":"s","refresh_token":"r"}"#).unwrap();
        assert_eq!(d.accounts_url, DEFAULT_ZOHO_ACCOUNTS_URL);
        assert!(ZohoOAuth::from_stored("not json").is_err());
    }
}
