//! `ticketflow tenants add|update|list|suspend|resume|rotate-secret|rotate-token|remove`:
//! works on the store directly, so it works whether or not `run` is up. A
//! running process sees changes within its tenant cache TTL
//! (`app::TENANT_CACHE_TTL`, 2 s): webhooks, stages and the SDP client read
//! tenants through that cache; API tokens are looked up uncached, so a
//! rotated token stops working at once.

use std::time::Duration;

use serde_json::json;
use sinks::now_ms;
use sinks::servicedesk::{SdpAuth, ZohoOAuth, DEFAULT_ZOHO_ACCOUNTS_URL};
use sinks::store::{Store, Tenant};
use sinks::Secret;

/// Tenant ids match `^[A-Za-z0-9_-]{1,64}$` (they appear in URLs, keys and
/// metric labels); the webhook endpoint refuses any other id before a
/// lookup ([`sinks::store::is_valid_tenant_id`], the one definition).
pub fn check_tenant_id(id: &str) -> Result<(), String> {
    if !sinks::store::is_valid_tenant_id(id) {
        return Err(format!(
            "invalid tenant id '{}': must match ^[A-Za-z0-9_-]{{1,64}}$ (1-64 ASCII letters, digits, '-' or '_')",
            id.escape_debug()
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

/// A new tenant API token (shown once, stored hashed): `tf_` and 32 bytes
/// from the operating system's random source, as hex.
pub fn generate_api_token() -> String {
    let bytes: [u8; 32] = sinks::secrets::random_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("tf_{hex}")
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

/// Zoho OAuth settings given on the command line (`--zoho-*`); `None`
/// leaves a setting as it is (update) or absent (add).
#[derive(Debug, Clone, Default)]
pub struct OAuthSettings {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub refresh_token: Option<String>,
    pub accounts_url: Option<String>,
}

impl OAuthSettings {
    pub fn is_given(&self) -> bool {
        self.client_id.is_some()
            || self.client_secret.is_some()
            || self.refresh_token.is_some()
            || self.accounts_url.is_some()
    }

    /// The credentials of a `zoho-oauth` tenant: these settings over
    /// `existing` ones; every part must be there in the end.
    fn resolve(&self, existing: Option<&ZohoOAuth>) -> Result<ZohoOAuth, String> {
        let pick = |given: &Option<String>, old: Option<&str>, flag: &str| -> Result<String, String> {
            match given.as_deref().map(str::trim) {
                Some("") => Err(format!("--{flag} must not be empty")),
                Some(v) => Ok(v.to_string()),
                None => old.map(str::to_string).ok_or_else(|| {
                    format!("--servicedesk-auth zoho-oauth needs --{flag} (with --zoho-client-id, --zoho-client-secret and --zoho-refresh-token)")
                }),
            }
        };
        let accounts_url = match &self.accounts_url {
            Some(u) => check_accounts_url(u)?,
            None => existing
                .map(|o| o.accounts_url.clone())
                .unwrap_or_else(|| DEFAULT_ZOHO_ACCOUNTS_URL.to_string()),
        };
        Ok(ZohoOAuth {
            accounts_url,
            client_id: pick(
                &self.client_id,
                existing.map(|o| o.client_id.as_str()),
                "zoho-client-id",
            )?,
            client_secret: Secret::new(pick(
                &self.client_secret,
                existing.map(|o| o.client_secret.expose()),
                "zoho-client-secret",
            )?),
            refresh_token: Secret::new(pick(
                &self.refresh_token,
                existing.map(|o| o.refresh_token.expose()),
                "zoho-refresh-token",
            )?),
        })
    }
}

/// The Zoho accounts server URL: http(s) with a host, no path.
pub fn check_accounts_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid --zoho-accounts-url '{url}': {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host().is_none()
        || !parsed.path().trim_matches('/').is_empty()
    {
        return Err(format!(
            "invalid --zoho-accounts-url '{url}': give the accounts server's base URL, like {DEFAULT_ZOHO_ACCOUNTS_URL}"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Adds a tenant; returns (webhook secret, API token).
pub async fn add(store: &dyn Store, a: AddTenant) -> Result<(String, String), String> {
    add_with_oauth(store, a, OAuthSettings::default()).await
}

/// Adds a tenant, with Zoho OAuth credentials when its auth is
/// `zoho-oauth` (then no SDP token is needed); returns (webhook secret,
/// API token).
pub async fn add_with_oauth(store: &dyn Store, a: AddTenant, oauth: OAuthSettings) -> Result<(String, String), String> {
    check_tenant_id(&a.tenant_id)?;
    let url = check_base_url(&a.servicedesk_url)?;
    let auth: SdpAuth = a.servicedesk_auth.parse()?;
    let oauth = match auth {
        SdpAuth::ZohoOAuth => {
            if !a.servicedesk_token.trim().is_empty() {
                return Err("--servicedesk-auth zoho-oauth takes no --servicedesk-token: access tokens are bought with --zoho-refresh-token".into());
            }
            Some(oauth.resolve(None)?)
        }
        _ if oauth.is_given() => {
            return Err("--zoho-* options apply only with --servicedesk-auth zoho-oauth".into());
        }
        _ => None,
    };
    if oauth.is_none() && a.servicedesk_token.trim().is_empty() {
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
    t.sdp.oauth = oauth;
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
    let mut t = existing(store, tenant_id).await?;
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

/// Where one secret comes from: the flag itself, a file, or stdin. Giving
/// two sources of one secret is refused; a trailing newline (what `echo`
/// and editors add) is trimmed; an empty secret is refused.
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    pub value: Option<String>,
    pub file: Option<std::path::PathBuf>,
    pub stdin: bool,
}

impl SecretSource {
    pub fn is_given(&self) -> bool {
        self.value.is_some() || self.file.is_some() || self.stdin
    }

    /// Reads the secret (`None` when no source was given). `flag` is the
    /// option's name without the leading dashes (`servicedesk-token`).
    pub fn read(&self, flag: &str) -> Result<Option<String>, String> {
        let given = [self.value.is_some(), self.file.is_some(), self.stdin]
            .iter()
            .filter(|g| **g)
            .count();
        if given > 1 {
            return Err(format!("give only one of --{flag}, --{flag}-file and --{flag}-stdin"));
        }
        let raw = if let Some(v) = &self.value {
            v.clone()
        } else if let Some(path) = &self.file {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read --{flag}-file {}: {e}", path.display()))?
        } else if self.stdin {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| format!("cannot read --{flag}-stdin: {e}"))?;
            s
        } else {
            return Ok(None);
        };
        let secret = trim_newline(&raw);
        if secret.trim().is_empty() {
            return Err(format!("--{flag} must not be empty"));
        }
        if secret.contains(['\n', '\r']) {
            return Err(format!("--{flag} must be one line"));
        }
        Ok(Some(secret.to_string()))
    }
}

/// Drops one trailing `\n` or `\r\n`.
fn trim_newline(s: &str) -> &str {
    s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(s)
}

/// Refuses reading two secrets from stdin in one command.
pub fn one_stdin(sources: &[(&str, &SecretSource)]) -> Result<(), String> {
    let from_stdin: Vec<String> = sources
        .iter()
        .filter(|(_, s)| s.stdin)
        .map(|(f, _)| format!("--{f}-stdin"))
        .collect();
    if from_stdin.len() > 1 {
        return Err(format!(
            "only one secret can come from stdin (got {})",
            from_stdin.join(" and ")
        ));
    }
    Ok(())
}

/// Parses `--events a,b`: the names, or an error when none is left.
pub fn parse_events(list: &str) -> Result<Vec<String>, String> {
    let events: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect();
    if events.is_empty() {
        return Err("--events must name at least one event".into());
    }
    if let Some(bad) = events.iter().find(|e| {
        e.len() > 64
            || !e
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    }) {
        return Err(format!(
            "invalid event '{bad}' in --events: use 1-64 letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(events)
}

async fn existing(store: &dyn Store, tenant_id: &str) -> Result<Tenant, String> {
    check_tenant_id(tenant_id)?;
    store
        .get_tenant(tenant_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("tenant '{tenant_id}' does not exist"))
}

/// What `tenants update` may change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct UpdateTenant {
    pub tenant_id: String,
    pub servicedesk_url: Option<String>,
    pub servicedesk_auth: Option<String>,
    pub servicedesk_token: Option<String>,
    pub requests_per_minute: Option<u32>,
    pub events: Option<Vec<String>>,
    /// Zoho OAuth credentials (with `zoho-oauth` auth).
    pub oauth: OAuthSettings,
}

/// Changes only the given settings (validated as `add` does); the API
/// token and webhook secrets stay. Returns the names of what changed.
pub async fn update(store: &dyn Store, u: UpdateTenant) -> Result<Vec<&'static str>, String> {
    if u.servicedesk_url.is_none()
        && u.servicedesk_auth.is_none()
        && u.servicedesk_token.is_none()
        && u.requests_per_minute.is_none()
        && u.events.is_none()
        && !u.oauth.is_given()
    {
        return Err("nothing to update: give at least one of --servicedesk-url, --servicedesk-auth, --servicedesk-token(-file/-stdin), --zoho-client-id, --zoho-client-secret(-file/-stdin), --zoho-refresh-token(-file/-stdin), --zoho-accounts-url, --requests-per-minute, --events".into());
    }
    check_tenant_id(&u.tenant_id)?;
    // Validate everything before touching the store.
    let url = u.servicedesk_url.as_deref().map(check_base_url).transpose()?;
    let auth: Option<SdpAuth> = u.servicedesk_auth.as_deref().map(str::parse).transpose()?;
    if u.servicedesk_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err("--servicedesk-token must not be empty".into());
    }
    if u.requests_per_minute == Some(0) {
        return Err("--requests-per-minute must be at least 1".into());
    }
    if u.events.as_ref().is_some_and(|e| e.is_empty()) {
        return Err("--events must name at least one event".into());
    }
    let mut t = existing(store, &u.tenant_id).await?;
    let mut changed = Vec::new();
    if let Some(url) = url {
        t.sdp.base_url = url;
        changed.push("servicedesk_url");
    }
    let new_auth = auth.unwrap_or(t.sdp.auth);
    if new_auth == SdpAuth::ZohoOAuth {
        if u.servicedesk_token.is_some() {
            return Err("--servicedesk-auth zoho-oauth takes no --servicedesk-token: access tokens are bought with --zoho-refresh-token".into());
        }
        let existing = t.sdp.oauth.as_ref().filter(|_| t.sdp.auth == SdpAuth::ZohoOAuth);
        let oauth = u.oauth.resolve(existing)?;
        if u.oauth.is_given() || existing.is_none() {
            changed.push("zoho_oauth");
        }
        t.sdp.oauth = Some(oauth);
        t.sdp.token = Secret::new("");
    } else {
        if u.oauth.is_given() {
            return Err("--zoho-* options apply only with --servicedesk-auth zoho-oauth".into());
        }
        if t.sdp.auth == SdpAuth::ZohoOAuth && u.servicedesk_token.is_none() {
            return Err(format!(
                "leaving zoho-oauth for {} needs --servicedesk-token(-file/-stdin)",
                new_auth.as_str()
            ));
        }
        t.sdp.oauth = None;
    }
    if let Some(auth) = auth {
        t.sdp.auth = auth;
        changed.push("servicedesk_auth");
    }
    if let Some(token) = u.servicedesk_token {
        t.sdp.token = Secret::new(token.trim());
        changed.push("servicedesk_token");
    }
    if let Some(rpm) = u.requests_per_minute {
        t.requests_per_minute = rpm;
        changed.push("requests_per_minute");
    }
    if let Some(events) = u.events {
        t.enabled_events = events;
        changed.push("enabled_events");
    }
    store.update_tenant(&t).await.map_err(|e| e.to_string())?;
    Ok(changed)
}

/// The reason recorded when `suspend` is given none.
pub const DEFAULT_SUSPEND_REASON: &str = "suspended by an operator";

/// Suspends a tenant: its webhooks are answered `403 tenant_suspended`
/// (after the signature verified) and the stages skip its queued records
/// with `tenant suspended: <reason>`. Suspending a suspended tenant
/// replaces the reason. Returns the previous reason, if any.
pub async fn suspend(store: &dyn Store, tenant_id: &str, reason: Option<String>) -> Result<Option<String>, String> {
    let reason = match reason {
        None => DEFAULT_SUSPEND_REASON.to_string(),
        Some(r) => {
            let r = r.trim().to_string();
            if r.is_empty() {
                return Err("--reason must not be empty".into());
            }
            if r.contains(['\n', '\r']) || r.len() > 500 {
                return Err("--reason must be one line of at most 500 bytes".into());
            }
            r
        }
    };
    let mut t = existing(store, tenant_id).await?;
    let previous = t.suspended.replace(reason);
    store.update_tenant(&t).await.map_err(|e| e.to_string())?;
    Ok(previous)
}

/// Resumes a suspended tenant; refuses one that is not suspended. Returns
/// the reason it was suspended for.
pub async fn resume(store: &dyn Store, tenant_id: &str) -> Result<String, String> {
    let mut t = existing(store, tenant_id).await?;
    let Some(reason) = t.suspended.take() else {
        return Err(format!("tenant '{tenant_id}' is not suspended"));
    };
    store.update_tenant(&t).await.map_err(|e| e.to_string())?;
    Ok(reason)
}

/// Issues a new API bearer token (returned once, stored hashed); the old
/// one stops working at once (the tenant API looks tokens up uncached).
pub async fn rotate_token(store: &dyn Store, tenant_id: &str) -> Result<String, String> {
    let mut t = existing(store, tenant_id).await?;
    let token = generate_api_token();
    t.api_token_hash = sinks::store::hash_token(&token);
    store.update_tenant(&t).await.map_err(|e| e.to_string())?;
    Ok(token)
}

/// Removes a tenant. Without `purge` the store refuses while history,
/// feedback or claims remain ([`sinks::store::StoreError::TenantHasData`]);
/// with it they are deleted first.
pub async fn remove(store: &dyn Store, tenant_id: &str, purge: bool) -> Result<(), String> {
    check_tenant_id(tenant_id)?;
    match store.remove_tenant(tenant_id, purge).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("tenant '{tenant_id}' does not exist")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn describe(t: &Tenant) -> serde_json::Value {
    json!({
        "tenant_id": t.tenant_id,
        "servicedesk_url": t.sdp.base_url,
        "servicedesk_auth": t.sdp.auth.as_str(),
        "zoho_accounts_url": t.sdp.oauth.as_ref().map(|o| o.accounts_url.as_str()),
        "zoho_client_id": t.sdp.oauth.as_ref().map(|o| o.client_id.as_str()),
        "requests_per_minute": t.requests_per_minute,
        "enabled_events": t.enabled_events,
        "suspended": t.suspended,
        "previous_secret_valid_until_ms": t.webhook_secrets.previous.as_ref().map(|_| t.webhook_secrets.previous_valid_until_ms),
        "created_at_ms": t.created_at_ms,
    })
}

#[cfg(test)]
mod id_and_token_tests {
    use super::*;

    #[test]
    fn ids_outside_the_pattern_are_refused_with_the_pattern() {
        for ok in ["acme", "ACME-eu_2", &"x".repeat(64)] {
            check_tenant_id(ok).unwrap();
        }
        for bad in ["", "bad id!", "a/b", "a.b", "é", &"x".repeat(65), "line\nbreak"] {
            let e = check_tenant_id(bad).unwrap_err();
            assert!(e.contains("^[A-Za-z0-9_-]{1,64}$"), "{e}");
        }
    }

    #[test]
    fn api_tokens_are_64_random_hex_digits() {
        let (a, b) = (generate_api_token(), generate_api_token());
        assert_ne!(a, b);
        for t in [a, b] {
            let hex = t.strip_prefix("tf_").unwrap();
            assert_eq!(hex.len(), 64);
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
