use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use libsql::{params, Connection, Row};
use tokio::sync::Mutex;

use super::*;
use crate::now_ms;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const MIGRATIONS: &[(&str, &str)] = &[("0001_init", include_str!("../../../migrations/embedded/0001_init.sql"))];

/// The default store: one libSQL file under the data dir.
///
/// One connection serialises this process's statements; other processes
/// (the `tenants` CLI) wait on SQLite's lock up to the busy timeout.
pub struct EmbeddedStore {
    conn: Mutex<Connection>,
    /// Ingest's webhook-id claims, group-committed on a second connection.
    ledger: super::ledger::Ledger,
    // Keeps the database handle alive for the connection.
    _db: libsql::Database,
}

fn unavailable(e: libsql::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: libsql::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn opt_str(row: &Row, i: i32) -> Result<Option<String>, StoreError> {
    row.get::<Option<String>>(i).map_err(corrupt)
}

fn tenant_of(row: &Row) -> Result<Tenant, StoreError> {
    let s = |i| row.get::<String>(i).map_err(corrupt);
    let auth: SdpAuth = s(2)?.parse().map_err(StoreError::Corrupt)?;
    Ok(Tenant {
        tenant_id: s(0)?,
        sdp: SdpTenant {
            base_url: s(1)?,
            auth,
            token: Secret::new(s(3)?),
        },
        webhook_secrets: WebhookSecrets {
            current: Secret::new(s(4)?),
            previous: opt_str(row, 5)?.map(Secret::new),
            previous_valid_until_ms: row.get::<i64>(6).map_err(corrupt)?,
        },
        api_token_hash: s(7)?,
        requests_per_minute: row.get::<i64>(8).map_err(corrupt)? as u32,
        enabled_events: s(9)?.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect(),
        created_at_ms: row.get::<i64>(10).map_err(corrupt)?,
    })
}

const TENANT_COLUMNS: &str = "tenant_id, sdp_base_url, sdp_auth, sdp_token, webhook_secret, previous_webhook_secret, previous_valid_until_ms, api_token_hash, requests_per_minute, enabled_events, created_at_ms";

const HISTORY_COLUMNS: &str = "tenant_id, job_id, ticket_id, correlation_id, status, method, error_message, failed_stage, subject, description, note_text, note_id, similar_tickets, kb_articles, ip_references, nodes_success, nodes_failed, timings_json, received_at_ms, completed_at_ms";

fn history_of(row: &Row) -> Result<HistoryRow, StoreError> {
    let s = |i| row.get::<String>(i).map_err(corrupt);
    let n = |i| row.get::<i64>(i).map_err(corrupt);
    let status = s(4)?;
    Ok(HistoryRow {
        tenant_id: s(0)?,
        job_id: s(1)?,
        ticket_id: s(2)?,
        correlation_id: s(3)?,
        status: HistoryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown history status {status}")))?,
        method: opt_str(row, 5)?,
        error_message: opt_str(row, 6)?,
        failed_stage: opt_str(row, 7)?,
        subject: opt_str(row, 8)?,
        description: opt_str(row, 9)?,
        note_text: opt_str(row, 10)?,
        note_id: opt_str(row, 11)?,
        counts: ContextCountsRow {
            similar_tickets: n(12)? as i32,
            kb_articles: n(13)? as i32,
            ip_references: n(14)? as i32,
            context_nodes_success: n(15)? as i32,
            context_nodes_failed: n(16)? as i32,
        },
        timings: serde_json::from_str(&s(17)?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        received_at_ms: n(18)?,
        completed_at_ms: n(19)?,
    })
}

fn feedback_of(row: &Row) -> Result<Feedback, StoreError> {
    let s = |i| row.get::<String>(i).map_err(corrupt);
    Ok(Feedback {
        tenant_id: s(0)?,
        feedback_id: s(1)?,
        job_id: s(2)?,
        ticket_id: s(3)?,
        rating: row.get::<i64>(4).map_err(corrupt)? as u8,
        helpful: row.get::<Option<i64>>(5).map_err(corrupt)?.map(|h| h != 0),
        comment: opt_str(row, 6)?,
        technician: opt_str(row, 7)?,
        created_at_ms: row.get::<i64>(8).map_err(corrupt)?,
    })
}

/// Applies every migration not applied yet; returns the names applied now.
async fn apply_migrations(conn: &Connection) -> Result<Vec<&'static str>, StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
        (),
    )
    .await
    .map_err(unavailable)?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let mut rows = conn
            .query("SELECT 1 FROM schema_migrations WHERE name = ?1", params![*name])
            .await
            .map_err(unavailable)?;
        if rows.next().await.map_err(unavailable)?.is_some() {
            continue;
        }
        conn.execute_batch(sql).await.map_err(unavailable)?;
        conn.execute(
            "INSERT OR IGNORE INTO schema_migrations (name, applied_at_ms) VALUES (?1, ?2)",
            params![*name, now_ms()],
        )
        .await
        .map_err(unavailable)?;
        applied.push(*name);
    }
    Ok(applied)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = libsql::Builder::new_local(path).build().await.map_err(unavailable)?;
        let conn = db.connect().map_err(unavailable)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        // WAL lets the CLI read and write while `run` holds the file open.
        let mut rows = conn.query("PRAGMA journal_mode=WAL", ()).await.map_err(unavailable)?;
        while rows.next().await.map_err(unavailable)?.is_some() {}
        conn.execute("PRAGMA synchronous=NORMAL", ())
            .await
            .map_err(unavailable)?;
        apply_migrations(&conn).await?;
        // The ledger's statements need the migrated tables.
        let ledger = super::ledger::Ledger::open(&db, BUSY_TIMEOUT).await?;
        Ok(EmbeddedStore {
            conn: Mutex::new(conn),
            ledger,
            _db: db,
        })
    }

    /// Applies every migration not applied yet; returns the names applied now.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        apply_migrations(&*self.conn.lock().await).await
    }

    async fn query_all<T>(
        &self,
        sql: &str,
        p: impl libsql::params::IntoParams,
        f: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn.lock().await;
        let mut rows = conn.query(sql, p).await.map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(unavailable)? {
            out.push(f(&row)?);
        }
        Ok(out)
    }

    async fn exec(&self, sql: &str, p: impl libsql::params::IntoParams) -> Result<u64, StoreError> {
        self.conn.lock().await.execute(sql, p).await.map_err(unavailable)
    }
}

#[async_trait]
impl TenantStore for EmbeddedStore {
    async fn create_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let n = self
            .exec(
                &format!("INSERT OR IGNORE INTO tenants ({TENANT_COLUMNS}, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)"),
                params![
                    t.tenant_id.as_str(),
                    t.sdp.base_url.as_str(),
                    t.sdp.auth.as_str(),
                    t.sdp.token.expose(),
                    t.webhook_secrets.current.expose(),
                    t.webhook_secrets.previous.as_ref().map(|s| s.expose().to_string()),
                    t.webhook_secrets.previous_valid_until_ms,
                    t.api_token_hash.as_str(),
                    t.requests_per_minute as i64,
                    t.enabled_events.join(","),
                    t.created_at_ms
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::TenantExists(t.tenant_id.clone()));
        }
        Ok(())
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let n = self
            .exec(
                "UPDATE tenants SET sdp_base_url = ?2, sdp_auth = ?3, sdp_token = ?4, webhook_secret = ?5, previous_webhook_secret = ?6, previous_valid_until_ms = ?7, api_token_hash = ?8, requests_per_minute = ?9, enabled_events = ?10, updated_at_ms = ?11 WHERE tenant_id = ?1",
                params![
                    t.tenant_id.as_str(),
                    t.sdp.base_url.as_str(),
                    t.sdp.auth.as_str(),
                    t.sdp.token.expose(),
                    t.webhook_secrets.current.expose(),
                    t.webhook_secrets.previous.as_ref().map(|s| s.expose().to_string()),
                    t.webhook_secrets.previous_valid_until_ms,
                    t.api_token_hash.as_str(),
                    t.requests_per_minute as i64,
                    t.enabled_events.join(","),
                    now_ms()
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NoSuchTenant(t.tenant_id.clone()));
        }
        Ok(())
    }

    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(self
            .query_all(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?1"),
                params![tenant_id],
                tenant_of,
            )
            .await?
            .pop())
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.query_all(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY tenant_id"),
            (),
            tenant_of,
        )
        .await
    }

    async fn remove_tenant(&self, tenant_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .exec("DELETE FROM tenants WHERE tenant_id = ?1", params![tenant_id])
            .await?
            > 0)
    }

    async fn tenant_by_api_token_hash(&self, hash: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(self
            .query_all(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE api_token_hash = ?1"),
                params![hash],
                tenant_of,
            )
            .await?
            .pop())
    }
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn put_history(&self, r: &HistoryRow) -> Result<(), StoreError> {
        let timings = serde_json::to_string(&r.timings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.exec(
            &format!("INSERT OR REPLACE INTO enhancement_history ({HISTORY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
            params![
                r.tenant_id.as_str(),
                r.job_id.as_str(),
                r.ticket_id.as_str(),
                r.correlation_id.as_str(),
                r.status.as_str(),
                r.method.clone(),
                r.error_message.clone(),
                r.failed_stage.clone(),
                r.subject.clone(),
                r.description.clone(),
                r.note_text.clone(),
                r.note_id.clone(),
                r.counts.similar_tickets,
                r.counts.kb_articles,
                r.counts.ip_references,
                r.counts.context_nodes_success,
                r.counts.context_nodes_failed,
                timings,
                r.received_at_ms,
                r.completed_at_ms
            ],
        )
        .await?;
        Ok(())
    }

    async fn history_by_job(&self, tenant_id: &str, job_id: &str) -> Result<Option<HistoryRow>, StoreError> {
        Ok(self
            .query_all(
                &format!("SELECT {HISTORY_COLUMNS} FROM enhancement_history WHERE tenant_id = ?1 AND job_id = ?2"),
                params![tenant_id, job_id],
                history_of,
            )
            .await?
            .pop())
    }

    async fn history_by_ticket(&self, tenant_id: &str, ticket_id: &str) -> Result<Vec<HistoryRow>, StoreError> {
        self.query_all(
            &format!("SELECT {HISTORY_COLUMNS} FROM enhancement_history WHERE tenant_id = ?1 AND ticket_id = ?2 ORDER BY completed_at_ms DESC"),
            params![tenant_id, ticket_id],
            history_of,
        )
        .await
    }

    async fn recent_history(&self, tenant_id: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
        self.query_all(
            &format!("SELECT {HISTORY_COLUMNS} FROM enhancement_history WHERE tenant_id = ?1 ORDER BY completed_at_ms DESC LIMIT ?2"),
            params![tenant_id, limit as i64],
            history_of,
        )
        .await
    }
}

#[async_trait]
impl FeedbackStore for EmbeddedStore {
    async fn add_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO feedback (tenant_id, feedback_id, job_id, ticket_id, rating, helpful, comment, technician, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                f.tenant_id.as_str(),
                f.feedback_id.as_str(),
                f.job_id.as_str(),
                f.ticket_id.as_str(),
                f.rating as i64,
                f.helpful.map(|h| h as i64),
                f.comment.clone(),
                f.technician.clone(),
                f.created_at_ms
            ],
        )
        .await?;
        Ok(())
    }

    async fn list_feedback(&self, tenant_id: &str, from_ms: i64, until_ms: i64) -> Result<Vec<Feedback>, StoreError> {
        self.query_all(
            "SELECT tenant_id, feedback_id, job_id, ticket_id, rating, helpful, comment, technician, created_at_ms FROM feedback WHERE tenant_id = ?1 AND created_at_ms >= ?2 AND created_at_ms < ?3 ORDER BY created_at_ms",
            params![tenant_id, from_ms, until_ms],
            feedback_of,
        )
        .await
    }
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn note_state(&self, tenant_id: &str, job_id: &str) -> Result<Option<NoteState>, StoreError> {
        let rows = self
            .query_all(
                "SELECT state, note_id FROM note_idempotency WHERE tenant_id = ?1 AND job_id = ?2",
                params![tenant_id, job_id],
                |row| {
                    let state = row.get::<String>(0).map_err(corrupt)?;
                    Ok(match state.as_str() {
                        "posted" => NoteState::Posted {
                            note_id: opt_str(row, 1)?.unwrap_or_default(),
                        },
                        _ => NoteState::Pending,
                    })
                },
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn note_pending(&self, tenant_id: &str, job_id: &str, ticket_id: &str) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR IGNORE INTO note_idempotency (tenant_id, job_id, ticket_id, state, note_id, updated_at_ms) VALUES (?1, ?2, ?3, 'pending', NULL, ?4)",
            params![tenant_id, job_id, ticket_id, now_ms()],
        )
        .await?;
        Ok(())
    }

    async fn note_posted(
        &self,
        tenant_id: &str,
        job_id: &str,
        ticket_id: &str,
        note_id: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO note_idempotency (tenant_id, job_id, ticket_id, state, note_id, updated_at_ms) VALUES (?1, ?2, ?3, 'posted', ?4, ?5)",
            params![tenant_id, job_id, ticket_id, note_id, now_ms()],
        )
        .await?;
        Ok(())
    }

    async fn claim_webhook(
        &self,
        tenant_id: &str,
        webhook_id: &str,
        job_id: &str,
        correlation_id: &str,
        stale_after_ms: i64,
    ) -> Result<WebhookClaim, StoreError> {
        self.ledger
            .claim(tenant_id, webhook_id, job_id, correlation_id, stale_after_ms)
            .await
    }

    async fn confirm_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        self.ledger.confirm(tenant_id, webhook_id).await
    }

    async fn release_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        self.ledger.release(tenant_id, webhook_id).await
    }

    async fn claim_event(
        &self,
        tenant_id: &str,
        ticket_id: &str,
        event: &str,
        job_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let conn = self.conn.lock().await;
        conn.execute(
            "INSERT OR IGNORE INTO event_dedup (tenant_id, ticket_id, event, job_id, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant_id, ticket_id, event, job_id, now_ms()],
        )
        .await
        .map_err(unavailable)?;
        let mut rows = conn
            .query(
                "SELECT job_id FROM event_dedup WHERE tenant_id = ?1 AND ticket_id = ?2 AND event = ?3",
                params![tenant_id, ticket_id, event],
            )
            .await
            .map_err(unavailable)?;
        let first = match rows.next().await.map_err(unavailable)? {
            Some(row) => row.get::<String>(0).map_err(corrupt)?,
            None => return Ok(None),
        };
        Ok((first != job_id).then_some(first))
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock().await;
        let mut rows = conn.query("SELECT 1", ()).await.map_err(unavailable)?;
        rows.next().await.map_err(unavailable)?;
        Ok(())
    }
}
