//! `ticketflow tenants add|list|rotate-secret|remove`: works on the store
//! directly, so it works whether or not `run` is up (a running process sees
//! changes within its tenant cache TTL).

use std::time::Duration;

use serde_json::json;
use sinks::now_ms;
use sinks::servicedesk::SdpAuth;
use sinks::store::{Store, Tenant};
use sinks::Secret;

/// Tenant ids: 1-64 letters, digits, `-` or `_` (they appear in URLs and keys).
pub fn check_tenant_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!(
            "invalid tenant id '{id}': use 1-64 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

pub fn check_base_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid --servicedesk-url '{url}': {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!(
            "invalid --servicedesk-url '{url}': must be an http(s) URL with a host"
        ));
    }
    if parsed.path().contains("/api/v3") {
        return Err(format!(
            "invalid --servicedesk-url '{url}': give the base URL; /api/v3/... is appended"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A new tenant API token (shown once, stored hashed).
pub fn generate_api_token() -> String {
    format!("tf_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

pub struct AddTenant {
    pub tenant_id: String,
    pub servicedesk_url: String,
    pub servicedesk_token: String,
    pub servicedesk_auth: String,
    pub webhook_secret: Option<String>,
    pub requests_per_minute: u32,
    pub events: Vec<String>,
}

/// Adds a tenant; returns (webhook secret, API token).
pub async fn add(store: &dyn Store, a: AddTenant) -> Result<(String, String), String> {
    check_tenant_id(&a.tenant_id)?;
    let url = check_base_url(&a.servicedesk_url)?;
    let auth: SdpAuth = a.servicedesk_auth.parse()?;
    if a.servicedesk_token.trim().is_empty() {
        return Err("--servicedesk-token must not be empty".into());
    }
    if a.requests_per_minute == 0 {
        return Err("--requests-per-minute must be at least 1".into());
    }
    let secret = match a.webhook_secret {
        Some(s) => {
            ingest::signature::secret_key(&s).map_err(|e| format!("invalid --webhook-secret: {e}"))?;
            s
        }
        None => ingest::signature::generate_secret(),
    };
    let token = generate_api_token();
    let mut t = Tenant::new(&a.tenant_id, &url, auth, a.servicedesk_token.trim(), &secret, &token);
    t.requests_per_minute = a.requests_per_minute;
    if !a.events.is_empty() {
        t.enabled_events = a.events;
    }
    store.create_tenant(&t).await.map_err(|e| e.to_string())?;
    Ok((secret, token))
}

/// Rotates the webhook secret; the previous stays valid for `grace`.
pub async fn rotate(
    store: &dyn Store,
    tenant_id: &str,
    new_secret: Option<String>,
    grace: Duration,
) -> Result<String, String> {
    let mut t = store
        .get_tenant(tenant_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("tenant '{tenant_id}' does not exist"))?;
    let secret = match new_secret {
        Some(s) => {
            ingest::signature::secret_key(&s).map_err(|e| format!("invalid --webhook-secret: {e}"))?;
            s
        }
        None => ingest::signature::generate_secret(),
    };
    t.webhook_secrets.previous = Some(t.webhook_secrets.current.clone());
    t.webhook_secrets.previous_valid_until_ms = now_ms() + grace.as_millis() as i64;
    t.webhook_secrets.current = Secret::new(secret.clone());
    store.update_tenant(&t).await.map_err(|e| e.to_string())?;
    Ok(secret)
}

pub fn describe(t: &Tenant) -> serde_json::Value {
    json!({
        "tenant_id": t.tenant_id,
        "servicedesk_url": t.sdp.base_url,
        "servicedesk_auth": t.sdp.auth.as_str(),
        "requests_per_minute": t.requests_per_minute,
        "enabled_events": t.enabled_events,
        "previous_secret_valid_until_ms": t.webhook_secrets.previous.as_ref().map(|_| t.webhook_secrets.previous_valid_until_ms),
        "created_at_ms": t.created_at_ms,
    })
}
