//! A short-lived cache of tenants in front of the store, so hot paths do
//! not hit the store per record while changes made by `ticketflow tenants`
//! (another process) are seen within `ttl`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Store, StoreError, Tenant};

/// A cached lookup: when it was made and what it found.
type Entry = (Instant, Option<Arc<Tenant>>);

pub struct TenantCache {
    store: Arc<dyn Store>,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl TenantCache {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        TenantCache {
            store,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The tenant, or `None` if it does not exist (also cached for `ttl`).
    pub async fn get(&self, tenant_id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some((at, t)) = self.entries.lock().expect("tenant cache lock").get(tenant_id) {
            if at.elapsed() < self.ttl {
                return Ok(t.clone());
            }
        }
        let fresh = self.store.get_tenant(tenant_id).await?.map(Arc::new);
        let mut entries = self.entries.lock().expect("tenant cache lock");
        if entries.len() > 100_000 {
            entries.clear();
        }
        entries.insert(tenant_id.to_string(), (Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}
