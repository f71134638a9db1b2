//! A short-lived cache of tenants in front of the store, so hot paths do
//! not hit the store per record while changes made by `ticketflow tenants`
//! (another process) are seen within `ttl`.
//!
//! Strangers choose the tenant ids of webhook URLs, so the two halves are
//! kept apart. Known tenants (only the operator makes them) sit in a plain
//! map. Unknown ids sit in a negative cache bounded in bytes: `moka`'s
//! sync cache with a weigher (an id's length plus an estimate of moka's
//! per-entry overhead), TinyLFU admission and LRU eviction, so a flood of
//! random ids neither grows memory past the budget nor pushes out the ids
//! that are looked up often. `moka` (with its `sync` feature) is already
//! in the binary through the embedded broker's `rama-net`, so it adds no
//! crate to a build; `quick_cache` would have been one more. Ids that do
//! not match [`is_valid_tenant_id`] are refused before the store and never
//! cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Store, StoreError, Tenant};

/// Longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// Default byte budget of the unknown-tenant cache
/// (`TICKETFLOW_UNKNOWN_TENANT_CACHE_BYTES`).
pub const DEFAULT_NEGATIVE_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// What one unknown id costs besides its bytes: moka's entry (key hash,
/// `Arc`ed value entry, access-order deque node, frequency sketch share)
/// and the map's slot — measured to be under this on 64-bit targets.
const ENTRY_OVERHEAD_BYTES: u32 = 192;

/// Whether `id` is a tenant id: `^[A-Za-z0-9_-]{1,64}$` (ASCII letters,
/// digits, `-` and `_`; they appear in URLs, Kafka keys and metric labels).
/// The same pattern `ticketflow tenants add` enforces, so every tenant ever
/// created passes it.
pub fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TENANT_ID_LEN
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// A cached known tenant: when it was read and what it was.
type Entry = (Instant, Arc<Tenant>);

pub struct TenantCache {
    store: Arc<dyn Store>,
    ttl: Duration,
    known: Mutex<HashMap<String, Entry>>,
    /// Valid ids the store did not know, for `ttl`.
    unknown: moka::sync::Cache<String, ()>,
}

impl TenantCache {
    /// A cache whose unknown-id half holds at most
    /// [`DEFAULT_NEGATIVE_CACHE_BYTES`].
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self::with_negative_budget(store, ttl, DEFAULT_NEGATIVE_CACHE_BYTES)
    }

    /// A cache whose unknown-id half holds at most `negative_bytes`.
    pub fn with_negative_budget(store: Arc<dyn Store>, ttl: Duration, negative_bytes: u64) -> Self {
        let unknown = moka::sync::Cache::builder()
            .max_capacity(negative_bytes)
            .weigher(|id: &String, _: &()| (id.len() as u32).saturating_add(ENTRY_OVERHEAD_BYTES))
            .time_to_live(ttl)
            .build();
        TenantCache {
            store,
            ttl,
            known: Mutex::new(HashMap::new()),
            unknown,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The tenant, or `None` if it does not exist (also cached for `ttl`)
    /// or `tenant_id` is not a valid id (answered without the store).
    pub async fn get(&self, tenant_id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if !is_valid_tenant_id(tenant_id) {
            return Ok(None);
        }
        if let Some((at, t)) = self.known.lock().expect("tenant cache lock").get(tenant_id) {
            if at.elapsed() < self.ttl {
                return Ok(Some(t.clone()));
            }
        }
        if self.unknown.contains_key(tenant_id) {
            return Ok(None);
        }
        let fresh = self.store.get_tenant(tenant_id).await?.map(Arc::new);
        match &fresh {
            Some(t) => {
                self.known
                    .lock()
                    .expect("tenant cache lock")
                    .insert(tenant_id.to_string(), (Instant::now(), t.clone()));
                self.unknown.invalidate(tenant_id);
            }
            None => {
                self.known.lock().expect("tenant cache lock").remove(tenant_id);
                self.unknown.insert(tenant_id.to_string(), ());
            }
        }
        Ok(fresh)
    }

    /// Whether `tenant_id` was found in the store by a recent lookup
    /// (the cache alone is asked; for metric labels).
    pub fn is_known(&self, tenant_id: &str) -> bool {
        self.known.lock().expect("tenant cache lock").contains_key(tenant_id)
    }

    /// Bytes the unknown-id half holds now, by its weigher (after pending
    /// evictions are applied).
    pub fn negative_bytes(&self) -> u64 {
        self.unknown.run_pending_tasks();
        self.unknown.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicedesk::SdpAuth;
    use crate::store::EmbeddedStore;

    #[test]
    fn the_documented_pattern() {
        for ok in ["acme", "a", "ACME-eu_2", "0", &"x".repeat(64), "tenant-1", "t_2"] {
            assert!(is_valid_tenant_id(ok), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a/b",
            "a.b",
            "..",
            "a%2Fb",
            "é",
            "a\0",
            "a:b",
            "{tenant_id}",
        ] {
            assert!(!is_valid_tenant_id(bad), "{bad:?}");
        }
    }

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let s: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.db")).await.unwrap());
        let t = Tenant::new("acme", "http://sdp", SdpAuth::AuthToken, "k", "whsec_AAAA", "tok");
        s.create_tenant(&t).await.unwrap();
        s
    }

    #[tokio::test]
    async fn invalid_ids_are_refused_without_the_store_and_never_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TenantCache::new(store(&dir).await, Duration::from_secs(60));
        assert!(cache.get("acme").await.unwrap().is_some());
        for bad in ["../etc", "a b", &"y".repeat(200)] {
            assert!(cache.get(bad).await.unwrap().is_none());
        }
        assert_eq!(cache.negative_bytes(), 0, "invalid ids take no cache space");
        assert!(cache.get("ghost").await.unwrap().is_none());
        assert_eq!(cache.negative_bytes(), u64::from(5 + ENTRY_OVERHEAD_BYTES));
    }

    #[tokio::test]
    async fn unknown_ids_stay_within_the_byte_budget_and_known_tenants_stay() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 64 * 1024;
        let cache = TenantCache::with_negative_budget(store(&dir).await, Duration::from_secs(60), budget);
        assert!(cache.get("acme").await.unwrap().is_some());
        for i in 0..5_000 {
            assert!(cache.get(&format!("stranger-{i:040}")).await.unwrap().is_none());
        }
        let held = cache.negative_bytes();
        assert!(held <= budget, "{held} bytes held, budget {budget}");
        assert!(held > 0);
        assert!(
            cache.get("acme").await.unwrap().is_some(),
            "the known tenant is still served"
        );
    }

    #[tokio::test]
    async fn a_tenant_created_after_a_miss_is_seen_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let cache = TenantCache::new(s.clone(), Duration::from_millis(200));
        assert!(cache.get("late").await.unwrap().is_none());
        let t = Tenant::new("late", "http://sdp", SdpAuth::AuthToken, "k", "whsec_AAAA", "tok2");
        s.create_tenant(&t).await.unwrap();
        assert!(cache.get("late").await.unwrap().is_none(), "cached miss within the ttl");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cache.get("late").await.unwrap().is_some());
        s.remove_tenant("late", false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            cache.get("late").await.unwrap().is_none(),
            "a removed tenant is forgotten"
        );
    }
}
