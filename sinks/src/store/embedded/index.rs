//! The embedded store's context-search index: postings, documents and
//! statistics in libSQL tables (`migrations/embedded/0004_search.sql`),
//! ranked by [`crate::store::search::rank`]. A document's rows change in one
//! write transaction, so readers (and other processes) see it whole.

use libsql::Value;

use super::{corrupt, opt_str, opt_text, text, EmbeddedStore};
use crate::now_ms;
use crate::store::search::{self, DocTerms, IndexStats, Posting};
use crate::store::{DocKind, InventoryAsset, SearchDoc, SearchHit, SearchStore, StoreError};

/// Documents written per transaction by a bulk index (an import).
const DOCS_PER_WRITE: usize = 200;

fn json(v: &impl serde::Serialize) -> Result<Value, StoreError> {
    serde_json::to_string(v)
        .map(Value::Text)
        .map_err(|e| StoreError::Rejected(e.to_string()))
}

/// The statements that replace one document (all in the caller's batch).
fn index_statements(tenant_id: &str, kind: DocKind, doc: &SearchDoc) -> Result<Vec<(String, Vec<Value>)>, StoreError> {
    let terms = DocTerms::of(doc);
    let key = || vec![text(tenant_id), text(kind.as_str()), text(&doc.doc_id)];
    let term_list: Vec<&String> = terms.tf.keys().collect();
    let mut doc_values = key();
    doc_values.extend([
        text(&doc.title),
        text(&doc.body),
        text(&doc.extra),
        opt_text(&doc.url),
        opt_text(&doc.status),
        i64::from(terms.len).into(),
        json(&term_list)?,
        now_ms().into(),
    ]);
    let mut postings = key();
    postings.extend([i64::from(terms.len).into(), json(&terms.tf)?]);
    Ok(vec![
        // The old version leaves the statistics and the postings first.
        (
            "UPDATE search_stats SET docs = docs - 1, total_len = total_len - (SELECT doc_len FROM search_docs WHERE tenant_id = ?1 AND kind = ?2 AND doc_id = ?3) WHERE tenant_id = ?1 AND kind = ?2 AND EXISTS (SELECT 1 FROM search_docs WHERE tenant_id = ?1 AND kind = ?2 AND doc_id = ?3)".into(),
            key(),
        ),
        (
            "DELETE FROM search_postings WHERE tenant_id = ?1 AND kind = ?2 AND doc_id = ?3 AND term IN (SELECT value FROM json_each((SELECT terms_json FROM search_docs WHERE tenant_id = ?1 AND kind = ?2 AND doc_id = ?3)))".into(),
            key(),
        ),
        (
            "INSERT OR REPLACE INTO search_docs (tenant_id, kind, doc_id, title, body, extra, url, status, doc_len, terms_json, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)".into(),
            doc_values,
        ),
        (
            "INSERT INTO search_stats (tenant_id, kind, docs, total_len) VALUES (?1, ?2, 1, ?3) ON CONFLICT (tenant_id, kind) DO UPDATE SET docs = docs + 1, total_len = total_len + excluded.total_len".into(),
            vec![text(tenant_id), text(kind.as_str()), i64::from(terms.len).into()],
        ),
        (
            "INSERT INTO search_postings (tenant_id, kind, term, doc_id, tf, doc_len) SELECT ?1, ?2, key, ?3, value, ?4 FROM json_each(?5)".into(),
            postings,
        ),
    ])
}

fn asset_of(row: &libsql::Row) -> Result<InventoryAsset, StoreError> {
    Ok(InventoryAsset {
        name: row.get::<String>(0).map_err(corrupt)?,
        ip: opt_str(row, 1)?,
        hostname: opt_str(row, 2)?,
        asset_type: opt_str(row, 3)?,
        owner: opt_str(row, 4)?,
        site: opt_str(row, 5)?,
    })
}

#[async_trait::async_trait]
impl SearchStore for EmbeddedStore {
    async fn index_documents(&self, tenant_id: &str, kind: DocKind, docs: &[SearchDoc]) -> Result<(), StoreError> {
        for chunk in docs.chunks(DOCS_PER_WRITE) {
            let mut batch = Vec::with_capacity(chunk.len() * 5);
            for doc in chunk {
                batch.extend(index_statements(tenant_id, kind, doc)?);
            }
            self.writer.exec(batch).await?;
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
        let terms = search::query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let stats = self
            .query_all(
                "SELECT docs, total_len FROM search_stats WHERE tenant_id = ?1 AND kind = ?2",
                vec![text(tenant_id), text(kind.as_str())],
                |r| {
                    Ok(IndexStats {
                        docs: r.get::<i64>(0).map_err(corrupt)?.max(0) as u64,
                        total_len: r.get::<i64>(1).map_err(corrupt)?.max(0) as u64,
                    })
                },
            )
            .await?
            .pop()
            .unwrap_or_default();
        if stats.docs == 0 {
            return Ok(Vec::new());
        }
        // One more than the cap: a longer list marks the term as too common.
        let cap = (search::MAX_POSTINGS + 1) as i64;
        let lists = futures::future::try_join_all(terms.iter().map(|term| {
            self.query_all(
                "SELECT doc_id, tf, doc_len FROM search_postings WHERE tenant_id = ?1 AND kind = ?2 AND term = ?3 LIMIT ?4",
                vec![text(tenant_id), text(kind.as_str()), text(term), cap.into()],
                |r| {
                    Ok(Posting {
                        doc_id: r.get::<String>(0).map_err(corrupt)?,
                        tf: r.get::<i64>(1).map_err(corrupt)?.clamp(0, u32::MAX as i64) as u32,
                        doc_len: r.get::<i64>(2).map_err(corrupt)?.clamp(0, u32::MAX as i64) as u32,
                    })
                },
            )
        }))
        .await?;
        let postings: Vec<(String, Vec<Posting>)> = terms.into_iter().zip(lists).collect();
        let ranked = search::rank(stats, &postings, limit, exclude);
        if ranked.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = ranked.iter().map(|r| &r.0).collect();
        let docs = self
            .query_all(
                "SELECT doc_id, title, body, extra, url, status FROM search_docs WHERE tenant_id = ?1 AND kind = ?2 AND doc_id IN (SELECT value FROM json_each(?3))",
                vec![text(tenant_id), text(kind.as_str()), json(&ids)?],
                |r| {
                    Ok(SearchDoc {
                        doc_id: r.get::<String>(0).map_err(corrupt)?,
                        title: r.get::<String>(1).map_err(corrupt)?,
                        body: r.get::<String>(2).map_err(corrupt)?,
                        extra: r.get::<String>(3).map_err(corrupt)?,
                        url: opt_str(r, 4)?,
                        status: opt_str(r, 5)?,
                    })
                },
            )
            .await?;
        let mut by_id: std::collections::HashMap<String, SearchDoc> =
            docs.into_iter().map(|d| (d.doc_id.clone(), d)).collect();
        Ok(ranked
            .into_iter()
            .filter_map(|(id, score, similarity)| by_id.remove(&id).map(|doc| SearchHit { doc, score, similarity }))
            .collect())
    }

    async fn put_assets(&self, tenant_id: &str, assets: &[InventoryAsset]) -> Result<(), StoreError> {
        for chunk in assets.chunks(DOCS_PER_WRITE) {
            let mut batch: Vec<(String, Vec<Value>)> = Vec::new();
            for a in chunk {
                batch.push((
                    "DELETE FROM inventory_keys WHERE tenant_id = ?1 AND name = ?2".into(),
                    vec![text(tenant_id), text(&a.name)],
                ));
                batch.push((
                    "INSERT OR REPLACE INTO inventory_assets (tenant_id, name, ip, hostname, asset_type, owner, site, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)".into(),
                    vec![
                        text(tenant_id),
                        text(&a.name),
                        opt_text(&a.ip),
                        opt_text(&a.hostname),
                        opt_text(&a.asset_type),
                        opt_text(&a.owner),
                        opt_text(&a.site),
                        now_ms().into(),
                    ],
                ));
                for k in a.lookup_keys() {
                    batch.push((
                        "INSERT OR IGNORE INTO inventory_keys (tenant_id, lookup_key, name) VALUES (?1, ?2, ?3)".into(),
                        vec![text(tenant_id), text(&k), text(&a.name)],
                    ));
                }
            }
            self.writer.exec(batch).await?;
        }
        Ok(())
    }

    async fn find_assets(&self, tenant_id: &str, keys: &[String]) -> Result<Vec<InventoryAsset>, StoreError> {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| k.trim().to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query_all(
            "SELECT name, ip, hostname, asset_type, owner, site FROM inventory_assets WHERE tenant_id = ?1 AND name IN (SELECT name FROM inventory_keys WHERE tenant_id = ?1 AND lookup_key IN (SELECT value FROM json_each(?2))) ORDER BY name",
            vec![text(tenant_id), json(&keys)?],
            asset_of,
        )
        .await
    }
}
