//! The ScyllaDB store's context-search index
//! (`migrations/scylla/0003_search.cql`): one postings partition per
//! (tenant, kind, term), documents by key, counters for the statistics, and
//! the same ranking as the embedded store ([`crate::store::search::rank`]).
//!
//! A re-index writes the new postings, then deletes the terms the document
//! no longer has, then the document: a concurrent reader may briefly rank
//! with old and new postings mixed, never with none. Counters are not
//! idempotent: a write retried after a timeout, or two writers of one
//! document at once, can make them drift a little; they only set idf and
//! the average length, so scores move slightly and nothing is lost.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;

use super::{classify_prepare, ScyllaStore};
use crate::now_ms;
use crate::store::search::{self, DocTerms, IndexStats, Posting};
use crate::store::{DocKind, InventoryAsset, SearchDoc, SearchHit, SearchStore, StoreError};

/// Statements run at once by one bulk write.
const CONCURRENCY: usize = 32;

pub(super) struct SearchStatements {
    doc_meta: PreparedStatement,
    doc_put: PreparedStatement,
    doc_read: PreparedStatement,
    doc_delete: PreparedStatement,
    doc_id_put: PreparedStatement,
    doc_ids: PreparedStatement,
    doc_ids_delete: PreparedStatement,
    posting_put: PreparedStatement,
    posting_delete: PreparedStatement,
    postings: PreparedStatement,
    stats_add: PreparedStatement,
    stats_get: PreparedStatement,
    asset_get: PreparedStatement,
    asset_put: PreparedStatement,
    assets_all: PreparedStatement,
    assets_delete: PreparedStatement,
    key_put: PreparedStatement,
    key_get: PreparedStatement,
    key_delete: PreparedStatement,
}

impl SearchStatements {
    pub(super) async fn prepare(
        session: &Session,
        ks: &str,
        page_size: u32,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let p = |cql: String| async move {
            let mut s = tokio::time::timeout(timeout, session.prepare(cql.clone()))
                .await
                .map_err(|_| StoreError::Unavailable(format!("ScyllaDB prepare timed out after {timeout:?}: {cql}")))?
                .map_err(|e| classify_prepare(&e))?;
            s.set_page_size(page_size.clamp(1, i32::MAX as u32) as i32);
            Ok::<_, StoreError>(s)
        };
        const ASSET: &str = "name, ip, hostname, asset_type, owner, site";
        Ok(SearchStatements {
            doc_meta: p(format!("SELECT doc_len, terms FROM {ks}.search_docs WHERE tenant_id = ? AND kind = ? AND doc_id = ?")).await?,
            doc_put: p(format!("INSERT INTO {ks}.search_docs (tenant_id, kind, doc_id, title, body, extra, url, status, doc_len, terms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")).await?,
            doc_read: p(format!("SELECT doc_id, title, body, extra, url, status FROM {ks}.search_docs WHERE tenant_id = ? AND kind = ? AND doc_id = ?")).await?,
            doc_delete: p(format!("DELETE FROM {ks}.search_docs WHERE tenant_id = ? AND kind = ? AND doc_id = ?")).await?,
            doc_id_put: p(format!("INSERT INTO {ks}.search_doc_ids (tenant_id, kind, doc_id) VALUES (?, ?, ?)")).await?,
            doc_ids: p(format!("SELECT doc_id FROM {ks}.search_doc_ids WHERE tenant_id = ? AND kind = ?")).await?,
            doc_ids_delete: p(format!("DELETE FROM {ks}.search_doc_ids WHERE tenant_id = ? AND kind = ?")).await?,
            posting_put: p(format!("INSERT INTO {ks}.search_postings (tenant_id, kind, term, doc_id, tf, doc_len) VALUES (?, ?, ?, ?, ?, ?)")).await?,
            posting_delete: p(format!("DELETE FROM {ks}.search_postings WHERE tenant_id = ? AND kind = ? AND term = ? AND doc_id = ?")).await?,
            postings: p(format!("SELECT doc_id, tf, doc_len FROM {ks}.search_postings WHERE tenant_id = ? AND kind = ? AND term = ? LIMIT ?")).await?,
            stats_add: p(format!("UPDATE {ks}.search_stats SET docs = docs + ?, total_len = total_len + ? WHERE tenant_id = ? AND kind = ?")).await?,
            stats_get: p(format!("SELECT docs, total_len FROM {ks}.search_stats WHERE tenant_id = ? AND kind = ?")).await?,
            asset_get: p(format!("SELECT {ASSET} FROM {ks}.inventory_assets WHERE tenant_id = ? AND name = ?")).await?,
            asset_put: p(format!("INSERT INTO {ks}.inventory_assets (tenant_id, {ASSET}, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")).await?,
            assets_all: p(format!("SELECT {ASSET} FROM {ks}.inventory_assets WHERE tenant_id = ?")).await?,
            assets_delete: p(format!("DELETE FROM {ks}.inventory_assets WHERE tenant_id = ?")).await?,
            key_put: p(format!("INSERT INTO {ks}.inventory_keys (tenant_id, lookup_key, name) VALUES (?, ?, ?)")).await?,
            key_get: p(format!("SELECT name FROM {ks}.inventory_keys WHERE tenant_id = ? AND lookup_key = ?")).await?,
            key_delete: p(format!("DELETE FROM {ks}.inventory_keys WHERE tenant_id = ? AND lookup_key = ? AND name = ?")).await?,
        })
    }
}

type AssetCql = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn asset_of((name, ip, hostname, asset_type, owner, site): AssetCql) -> InventoryAsset {
    InventoryAsset {
        name,
        ip,
        hostname,
        asset_type,
        owner,
        site,
    }
}

const KINDS: [DocKind; 2] = [DocKind::Ticket, DocKind::Article];

impl ScyllaStore {
    async fn index_one(&self, tenant_id: &str, kind: DocKind, doc: &SearchDoc) -> Result<(), StoreError> {
        let s = &self.search;
        let k = kind.as_str();
        let terms = DocTerms::of(doc);
        let old: Vec<(Option<i32>, Option<Vec<String>>)> =
            self.select(&s.doc_meta, (tenant_id, k, &doc.doc_id), Some(1)).await?;
        let (old_len, old_terms, existed) = match old.into_iter().next() {
            Some((len, terms)) => (len.unwrap_or(0), terms.unwrap_or_default(), true),
            None => (0, Vec::new(), false),
        };
        let len = terms.len.min(i32::MAX as u32) as i32;
        let puts: Vec<(&str, &str, &str, &str, i32, i32)> = terms
            .tf
            .iter()
            .map(|(term, tf)| {
                (
                    tenant_id,
                    k,
                    term.as_str(),
                    doc.doc_id.as_str(),
                    (*tf).min(i32::MAX as u32) as i32,
                    len,
                )
            })
            .collect();
        self.exec_all(&s.posting_put, &puts).await?;
        let stale: Vec<(&str, &str, &str, &str)> = old_terms
            .iter()
            .filter(|t| !terms.tf.contains_key(*t))
            .map(|t| (tenant_id, k, t.as_str(), doc.doc_id.as_str()))
            .collect();
        self.exec_all(&s.posting_delete, &stale).await?;
        let term_list: Vec<&String> = terms.tf.keys().collect();
        self.exec(
            &s.doc_put,
            (
                tenant_id,
                k,
                &doc.doc_id,
                &doc.title,
                &doc.body,
                &doc.extra,
                &doc.url,
                &doc.status,
                len,
                term_list,
                now_ms(),
            ),
        )
        .await?;
        self.exec(&s.doc_id_put, (tenant_id, k, &doc.doc_id)).await?;
        let docs_delta = if existed { 0 } else { 1 };
        self.exec(
            &s.stats_add,
            (
                Counter(docs_delta),
                Counter(i64::from(len) - i64::from(old_len)),
                tenant_id,
                k,
            ),
        )
        .await?;
        Ok(())
    }

    async fn put_asset(&self, tenant_id: &str, a: &InventoryAsset) -> Result<(), StoreError> {
        let s = &self.search;
        let old: Vec<AssetCql> = self.select(&s.asset_get, (tenant_id, &a.name), Some(1)).await?;
        let new_keys: BTreeSet<String> = a.lookup_keys().into_iter().collect();
        if let Some(old) = old.into_iter().next() {
            let stale: Vec<(&str, String, &str)> = asset_of(old)
                .lookup_keys()
                .into_iter()
                .filter(|k| !new_keys.contains(k))
                .map(|k| (tenant_id, k, a.name.as_str()))
                .collect();
            self.exec_all(&s.key_delete, &stale).await?;
        }
        self.exec(
            &s.asset_put,
            (
                tenant_id,
                &a.name,
                &a.ip,
                &a.hostname,
                &a.asset_type,
                &a.owner,
                &a.site,
                now_ms(),
            ),
        )
        .await?;
        let keys: Vec<(&str, &String, &str)> = new_keys.iter().map(|k| (tenant_id, k, a.name.as_str())).collect();
        self.exec_all(&s.key_put, &keys).await
    }

    /// Whether the tenant has indexed documents or inventory.
    pub(super) async fn search_has_data(&self, tenant_id: &str) -> Result<bool, StoreError> {
        let s = &self.search;
        for kind in KINDS {
            let ids: Vec<(String,)> = self.select(&s.doc_ids, (tenant_id, kind.as_str()), Some(1)).await?;
            if !ids.is_empty() {
                return Ok(true);
            }
        }
        let assets: Vec<AssetCql> = self.select(&s.assets_all, (tenant_id,), Some(1)).await?;
        Ok(!assets.is_empty())
    }

    /// Deletes the tenant's index and inventory (`tenants remove --purge`).
    pub(super) async fn purge_search(&self, tenant_id: &str) -> Result<(), StoreError> {
        let s = &self.search;
        for kind in KINDS {
            let k = kind.as_str();
            let ids: Vec<(String,)> = self.select(&s.doc_ids, (tenant_id, k), None).await?;
            for chunk in ids.chunks(CONCURRENCY) {
                let metas = futures::future::try_join_all(chunk.iter().map(|(id,)| {
                    self.select::<(Option<i32>, Option<Vec<String>>)>(&s.doc_meta, (tenant_id, k, id), Some(1))
                }))
                .await?;
                for ((id,), meta) in chunk.iter().zip(metas) {
                    let terms = meta.into_iter().next().and_then(|m| m.1).unwrap_or_default();
                    let rows: Vec<(&str, &str, &str, &str)> =
                        terms.iter().map(|t| (tenant_id, k, t.as_str(), id.as_str())).collect();
                    self.exec_all(&s.posting_delete, &rows).await?;
                    self.exec(&s.doc_delete, (tenant_id, k, id)).await?;
                }
            }
            self.exec(&s.doc_ids_delete, (tenant_id, k)).await?;
            // Counters are brought to zero, not deleted: a deleted counter
            // cannot be reliably counted again (a tenant added later under
            // the same id would start from wrong statistics).
            let stats: Vec<(Option<Counter>, Option<Counter>)> =
                self.select(&s.stats_get, (tenant_id, k), Some(1)).await?;
            if let Some((docs, len)) = stats.into_iter().next() {
                let (docs, len) = (docs.map_or(0, |c| c.0), len.map_or(0, |c| c.0));
                if docs != 0 || len != 0 {
                    self.exec(&s.stats_add, (Counter(-docs), Counter(-len), tenant_id, k))
                        .await?;
                }
            }
        }
        let assets: Vec<AssetCql> = self.select(&s.assets_all, (tenant_id,), None).await?;
        let keys: Vec<(&str, String, String)> = assets
            .into_iter()
            .map(asset_of)
            .flat_map(|a| {
                let name = a.name.clone();
                a.lookup_keys().into_iter().map(move |k| (tenant_id, k, name.clone()))
            })
            .collect();
        self.exec_all(&s.key_delete, &keys).await?;
        self.exec(&s.assets_delete, (tenant_id,)).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl SearchStore for ScyllaStore {
    async fn index_documents(&self, tenant_id: &str, kind: DocKind, docs: &[SearchDoc]) -> Result<(), StoreError> {
        for chunk in docs.chunks(CONCURRENCY) {
            futures::future::try_join_all(chunk.iter().map(|d| self.index_one(tenant_id, kind, d))).await?;
        }
        Ok(())
    }

    async fn search_documents(
        &self,
        tenant_id: &str,
        kind: DocKind,
        query: &str,
        limit: usize,
        exclude: Option<&str>,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let s = &self.search;
        let k = kind.as_str();
        let terms = search::query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let stats: Vec<(Option<Counter>, Option<Counter>)> = self.select(&s.stats_get, (tenant_id, k), Some(1)).await?;
        let stats = stats
            .into_iter()
            .next()
            .map(|(d, l)| IndexStats {
                docs: d.map_or(0, |c| c.0.max(0) as u64),
                total_len: l.map_or(0, |c| c.0.max(0) as u64),
            })
            .unwrap_or_default();
        if stats.docs == 0 {
            return Ok(Vec::new());
        }
        let cap = (search::MAX_POSTINGS + 1) as i32;
        let lists = futures::future::try_join_all(terms.iter().map(|term| {
            self.select::<(String, Option<i32>, Option<i32>)>(&s.postings, (tenant_id, k, term, cap), None)
        }))
        .await?;
        let postings: Vec<(String, Vec<Posting>)> = terms
            .into_iter()
            .zip(lists)
            .map(|(term, rows)| {
                let list = rows
                    .into_iter()
                    .map(|(doc_id, tf, len)| Posting {
                        doc_id,
                        tf: tf.unwrap_or(0).max(0) as u32,
                        doc_len: len.unwrap_or(0).max(0) as u32,
                    })
                    .collect();
                (term, list)
            })
            .collect();
        let ranked = search::rank(stats, &postings, limit, exclude);
        type DocCql = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let docs = futures::future::try_join_all(
            ranked
                .iter()
                .map(|(id, _, _)| self.select::<DocCql>(&s.doc_read, (tenant_id, k, id), Some(1))),
        )
        .await?;
        let mut by_id: HashMap<String, SearchDoc> = docs
            .into_iter()
            .flatten()
            .map(|(doc_id, title, body, extra, url, status)| {
                (
                    doc_id.clone(),
                    SearchDoc {
                        doc_id,
                        title: title.unwrap_or_default(),
                        body: body.unwrap_or_default(),
                        extra: extra.unwrap_or_default(),
                        url,
                        status,
                    },
                )
            })
            .collect();
        Ok(ranked
            .into_iter()
            .filter_map(|(id, score, similarity)| by_id.remove(&id).map(|doc| SearchHit { doc, score, similarity }))
            .collect())
    }

    async fn put_assets(&self, tenant_id: &str, assets: &[InventoryAsset]) -> Result<(), StoreError> {
        for chunk in assets.chunks(CONCURRENCY) {
            futures::future::try_join_all(chunk.iter().map(|a| self.put_asset(tenant_id, a))).await?;
        }
        Ok(())
    }

    async fn find_assets(&self, tenant_id: &str, keys: &[String]) -> Result<Vec<InventoryAsset>, StoreError> {
        let s = &self.search;
        let mut keys: Vec<String> = keys
            .iter()
            .map(|k| k.trim().to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        let found = futures::future::try_join_all(
            keys.iter()
                .map(|key| self.select::<(String,)>(&s.key_get, (tenant_id, key), None)),
        )
        .await?;
        let names: BTreeSet<String> = found.into_iter().flatten().map(|(n,)| n).collect();
        let rows = futures::future::try_join_all(
            names
                .iter()
                .map(|n| self.select::<AssetCql>(&s.asset_get, (tenant_id, n), Some(1))),
        )
        .await?;
        Ok(rows.into_iter().flatten().map(asset_of).collect())
    }
}
