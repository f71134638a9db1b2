use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use libsql::{params, Connection, Row, Value};

mod index;

use super::migrate::{self, Applied};
use super::seal::{open_tenant_secrets, sdp_credentials, seal_tenant_secrets};
use super::*;
use crate::now_ms;

/// How long a statement waits for another connection's (or process's)
/// write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections per process.
const READERS: usize = 4;

/// How often expired claims are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per sweep statement (keeps each write transaction short).
const SWEEP_CHUNK: i64 = 5000;

/// The default store: one libSQL file under the data dir.
///
/// Writes go to one writer task per process ([`super::ledger::Ledger`]),
/// group-committed; reads use a small pool of connections of their own
/// (WAL: readers never wait for the writer). No lock is held across I/O.
/// Several processes may open the same file: SQLite's file lock orders
/// their writers (each waits up to the busy timeout), and every claim is
/// decided inside one write transaction, so two processes never both win.
pub struct EmbeddedStore {
    readers: Readers,
    writer: super::ledger::Ledger,
    options: StoreOptions,
    sweeper: tokio::task::JoinHandle<()>,
    // Keeps the database handle alive for the connections.
    _db: Arc<libsql::Database>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// Reader connections, each with its statements prepared once.
struct Readers {
    idle: std::sync::Mutex<Vec<Reader>>,
    permits: tokio::sync::Semaphore,
}

struct Reader {
    conn: Connection,
    cached: HashMap<String, libsql::Statement>,
}

/// A reader taken from the pool; returned when dropped.
struct ReaderGuard<'a> {
    reader: Option<Reader>,
    pool: &'a Readers,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            self.pool.idle.lock().expect("reader pool lock").push(r);
        }
    }
}

impl Readers {
    async fn take(&self) -> Result<ReaderGuard<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        let reader = self.idle.lock().expect("reader pool lock").pop();
        Ok(ReaderGuard {
            reader,
            pool: self,
            _permit: permit,
        })
    }
}

fn unavailable(e: libsql::Error) -> StoreError {
    super::ledger::unavailable(e)
}

fn corrupt(e: libsql::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn opt_str(row: &Row, i: i32) -> Result<Option<String>, StoreError> {
    row.get::<Option<String>>(i).map_err(corrupt)
}

fn tenant_of(sealer: &Sealer, row: &Row) -> Result<Tenant, StoreError> {
    let s = |i| row.get::<String>(i).map_err(corrupt);
    let auth: SdpAuth = s(2)?.parse().map_err(StoreError::Corrupt)?;
    let tenant_id = s(0)?;
    let secrets = open_tenant_secrets(sealer, &tenant_id, &s(3)?, &s(4)?, opt_str(row, 5)?.as_deref())?;
    let (token, oauth) = sdp_credentials(auth, secrets.sdp_token)?;
    Ok(Tenant {
        sdp: SdpTenant {
            base_url: s(1)?,
            auth,
            token,
            oauth,
        },
        webhook_secrets: WebhookSecrets {
            current: secrets.webhook_secret,
            previous: secrets.previous_webhook_secret,
            previous_valid_until_ms: row.get::<i64>(6).map_err(corrupt)?,
        },
        api_token_hash: s(7)?,
        requests_per_minute: row.get::<i64>(8).map_err(corrupt)?.clamp(0, u32::MAX as i64) as u32,
        enabled_events: s(9)?.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect(),
        created_at_ms: row.get::<i64>(10).map_err(corrupt)?,
        suspended: opt_str(row, 11)?,
        tenant_id,
    })
}

const TENANT_COLUMNS: &str = "tenant_id, sdp_base_url, sdp_auth, sdp_token, webhook_secret, previous_webhook_secret, previous_valid_until_ms, api_token_hash, requests_per_minute, enabled_events, created_at_ms, suspended";

const HISTORY_COLUMNS: &str = "tenant_id, job_id, ticket_id, correlation_id, status, method, error_message, failed_stage, subject, description, note_text, note_id, similar_tickets, kb_articles, ip_references, nodes_success, nodes_failed, timings_json, received_at_ms, completed_at_ms, prompt_version, model, tokens_in, tokens_out, cost_usd";

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
        llm: LlmUsageRow {
            prompt_version: opt_str(row, 20)?,
            model: opt_str(row, 21)?,
            tokens_in: row.get::<Option<i64>>(22).map_err(corrupt)?,
            tokens_out: row.get::<Option<i64>>(23).map_err(corrupt)?,
            cost_usd: row.get::<Option<f64>>(24).map_err(corrupt)?,
        },
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

async fn run_all(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    let mut rows = conn.query(sql, ()).await.map_err(unavailable)?;
    while rows.next().await.map_err(unavailable)?.is_some() {}
    Ok(())
}

/// The migrations recorded in the file (creating the bookkeeping table,
/// and its checksum column, when missing).
async fn applied_migrations(conn: &Connection) -> Result<Vec<Applied>, StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL, checksum TEXT)",
        (),
    )
    .await
    .map_err(unavailable)?;
    let mut has_checksum = false;
    let mut cols = conn
        .query("SELECT name FROM pragma_table_info('schema_migrations')", ())
        .await
        .map_err(unavailable)?;
    while let Some(row) = cols.next().await.map_err(unavailable)? {
        has_checksum |= row.get::<String>(0).map_err(corrupt)? == "checksum";
    }
    if !has_checksum {
        conn.execute("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT", ())
            .await
            .map_err(unavailable)?;
    }
    let mut rows = conn
        .query("SELECT name, checksum FROM schema_migrations ORDER BY name", ())
        .await
        .map_err(unavailable)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.map_err(unavailable)? {
        out.push(Applied {
            name: row.get::<String>(0).map_err(corrupt)?,
            checksum: opt_str(&row, 1)?,
        });
    }
    Ok(out)
}

/// `run`'s check, in one write transaction (so two processes opening one
/// file at once do it one after the other): a new file (no tables at all)
/// gets the schema; any other must have every migration of this binary.
/// Nothing is changed when the check fails.
async fn check_or_create_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute("BEGIN IMMEDIATE", ()).await.map_err(unavailable)?;
    let result = async {
        let mut rows = conn
            .query("SELECT count(*) FROM sqlite_master WHERE type = 'table'", ())
            .await
            .map_err(unavailable)?;
        let tables = match rows.next().await.map_err(unavailable)? {
            Some(r) => r.get::<i64>(0).map_err(corrupt)?,
            None => 0,
        };
        drop(rows);
        if tables == 0 {
            return apply_pending(conn).await.map(|_| ());
        }
        let applied = applied_migrations(conn).await?;
        migrate::require_current(migrate::EMBEDDED, &applied, &format!("store {}", path.display()))
    }
    .await;
    match &result {
        Ok(()) => conn.execute("COMMIT", ()).await.map(|_| ()).map_err(unavailable)?,
        Err(_) => {
            let _ = conn.execute("ROLLBACK", ()).await;
        }
    }
    result
}

/// Applies every migration not applied yet, in one write transaction (two
/// processes opening a new store at once apply them once); returns the
/// names applied now.
async fn apply_migrations(conn: &Connection) -> Result<Vec<String>, StoreError> {
    conn.execute("BEGIN IMMEDIATE", ()).await.map_err(unavailable)?;
    let result = apply_pending(conn).await;
    match &result {
        Ok(_) => conn.execute("COMMIT", ()).await.map(|_| ()).map_err(unavailable)?,
        Err(_) => {
            let _ = conn.execute("ROLLBACK", ()).await;
        }
    }
    result
}

/// Inside the caller's write transaction.
async fn apply_pending(conn: &Connection) -> Result<Vec<String>, StoreError> {
    {
        let applied = applied_migrations(conn).await?;
        let todo = migrate::pending(migrate::EMBEDDED, &applied)?;
        let mut done = Vec::new();
        for m in todo {
            conn.execute_batch(m.text).await.map_err(unavailable)?;
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at_ms, checksum) VALUES (?1, ?2, ?3)",
                params![m.name, now_ms(), m.checksum()],
            )
            .await
            .map_err(unavailable)?;
            done.push(m.name.to_string());
        }
        for a in applied.iter().filter(|a| a.checksum.is_none()) {
            if let Some(m) = migrate::EMBEDDED.iter().find(|m| m.name == a.name) {
                conn.execute(
                    "UPDATE schema_migrations SET checksum = ?2 WHERE name = ?1",
                    params![m.name, m.checksum()],
                )
                .await
                .map_err(unavailable)?;
            }
        }
        Ok(done)
    }
}

async fn connect(db: &libsql::Database) -> Result<Connection, StoreError> {
    let conn = db.connect().map_err(unavailable)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    // Per connection: WAL syncs at checkpoints, not on every commit (an
    // acknowledged write survives a process crash, not necessarily a
    // power loss).
    conn.execute("PRAGMA synchronous=NORMAL", ())
        .await
        .map_err(unavailable)?;
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens the store at `path` with default options (see [`Self::open_with`]).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default()).await
    }

    /// Opens (creating if needed) the store at `path`. A new file gets the
    /// schema; an existing one must already have every migration this
    /// binary carries (else: run `ticketflow migrate`).
    pub async fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let (db, conn) = Self::open_file(path).await?;
        check_or_create_schema(&conn, path).await?;
        // The writer's statements need the migrated tables.
        let writer = super::ledger::Ledger::open(&db, BUSY_TIMEOUT).await?;
        let mut idle = vec![Reader {
            conn,
            cached: HashMap::new(),
        }];
        for _ in 1..READERS {
            idle.push(Reader {
                conn: connect(&db).await?,
                cached: HashMap::new(),
            });
        }
        let db = Arc::new(db);
        let sweeper = tokio::spawn(sweep_forever(writer.clone(), options.retention));
        Ok(EmbeddedStore {
            readers: Readers {
                idle: std::sync::Mutex::new(idle),
                permits: tokio::sync::Semaphore::new(READERS),
            },
            writer,
            options,
            sweeper,
            _db: db,
        })
    }

    async fn open_file(path: &Path) -> Result<(libsql::Database, Connection), StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = libsql::Builder::new_local(path).build().await.map_err(unavailable)?;
        let conn = connect(&db).await?;
        // WAL lets readers, the CLI and other processes work beside `run`.
        run_all(&conn, "PRAGMA journal_mode=WAL").await?;
        Ok((db, conn))
    }

    /// `ticketflow migrate`: applies every migration not applied yet to the
    /// store at `path`; returns the names applied now. Refuses a store whose
    /// applied migrations changed or are unknown to this binary.
    pub async fn migrate_file(path: &Path) -> Result<Vec<String>, StoreError> {
        let (_db, conn) = Self::open_file(path).await?;
        apply_migrations(&conn).await
    }

    /// Deletes claims older than the retention now (the background sweep
    /// does this every minute); returns the rows deleted.
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        sweep(&self.writer, self.options.retention).await
    }

    async fn query_all<T>(
        &self,
        sql: &str,
        p: Vec<Value>,
        f: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut guard = self.readers.take().await?;
        let reader = guard
            .reader
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no reader connection".into()))?;
        if !reader.cached.contains_key(sql) {
            let stmt = reader.conn.prepare(sql).await.map_err(unavailable)?;
            reader.cached.insert(sql.to_string(), stmt);
        }
        let stmt = &reader.cached[sql];
        stmt.reset();
        let result = async {
            let mut rows = stmt.query(p).await.map_err(unavailable)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await.map_err(unavailable)? {
                out.push(f(&row)?);
            }
            Ok(out)
        }
        .await;
        stmt.reset();
        result
    }

    async fn exec(&self, sql: &str, p: Vec<Value>) -> Result<u64, StoreError> {
        self.writer.exec_one(sql, p).await
    }

    fn expired_before(&self, ttl: Duration) -> i64 {
        now_ms() - ttl.as_millis().min(i64::MAX as u128) as i64
    }

    fn tenant_values(&self, t: &Tenant) -> Result<Vec<Value>, StoreError> {
        let sealed = seal_tenant_secrets(&self.options.sealer, t)?;
        Ok(vec![
            t.tenant_id.clone().into(),
            t.sdp.base_url.clone().into(),
            t.sdp.auth.as_str().into(),
            sealed.sdp_token.into(),
            sealed.webhook_secret.into(),
            sealed.previous_webhook_secret.map(Value::from).unwrap_or(Value::Null),
            t.webhook_secrets.previous_valid_until_ms.into(),
            t.api_token_hash.clone().into(),
            i64::from(t.requests_per_minute).into(),
            t.enabled_events.join(",").into(),
            t.created_at_ms.into(),
            t.suspended.clone().map(Value::from).unwrap_or(Value::Null),
            now_ms().into(),
        ])
    }
}

/// Deletes expired claims in chunks, each its own short write.
async fn sweep(writer: &super::ledger::Ledger, retention: Retention) -> Result<u64, StoreError> {
    let now = now_ms();
    let before = |ttl: Duration| now - ttl.as_millis().min(i64::MAX as u128) as i64;
    let mut deleted = 0;
    for (table, column, ttl) in [
        ("webhook_dedup", "created_at_ms", retention.webhook_claims),
        ("event_dedup", "created_at_ms", retention.event_claims),
        ("note_idempotency", "updated_at_ms", retention.note_records),
    ] {
        loop {
            let n = writer
                .exec_one(
                    format!(
                        "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)"
                    ),
                    vec![before(ttl).into(), SWEEP_CHUNK.into()],
                )
                .await?;
            deleted += n;
            if n < SWEEP_CHUNK as u64 {
                break;
            }
        }
    }
    Ok(deleted)
}

async fn sweep_forever(writer: super::ledger::Ledger, retention: Retention) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        match sweep(&writer, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "deleted expired idempotency records"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired idempotency records failed; will retry"),
        }
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt_text(s: &Option<String>) -> Value {
    s.clone().map(Value::Text).unwrap_or(Value::Null)
}

#[async_trait]
impl TenantStore for EmbeddedStore {
    async fn create_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let n = self
            .exec(
                &format!("INSERT OR IGNORE INTO tenants ({TENANT_COLUMNS}, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                self.tenant_values(t)?,
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
                "UPDATE tenants SET sdp_base_url = ?2, sdp_auth = ?3, sdp_token = ?4, webhook_secret = ?5, previous_webhook_secret = ?6, previous_valid_until_ms = ?7, api_token_hash = ?8, requests_per_minute = ?9, enabled_events = ?10, suspended = ?12, updated_at_ms = ?13 WHERE tenant_id = ?1 AND ?11 IS NOT NULL",
                self.tenant_values(t)?,
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NoSuchTenant(t.tenant_id.clone()));
        }
        Ok(())
    }

    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError> {
        let sealer = &self.options.sealer;
        Ok(self
            .query_all(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?1"),
                vec![text(tenant_id)],
                |r| tenant_of(sealer, r),
            )
            .await?
            .pop())
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let sealer = &self.options.sealer;
        self.query_all(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY tenant_id"),
            vec![],
            |r| tenant_of(sealer, r),
        )
        .await
    }

    async fn remove_tenant(&self, tenant_id: &str, purge: bool) -> Result<bool, StoreError> {
        if self.get_tenant(tenant_id).await?.is_none() {
            return Ok(false);
        }
        if !purge && self.tenant_has_data(tenant_id).await? {
            return Err(StoreError::TenantHasData(tenant_id.to_string()));
        }
        // One atomic write: the tenant and (with purge) all its rows.
        let mut statements: Vec<(String, Vec<Value>)> = Vec::new();
        if purge {
            for table in [
                "enhancement_history",
                "feedback",
                "note_idempotency",
                "webhook_dedup",
                "event_dedup",
                "search_docs",
                "search_postings",
                "search_stats",
                "inventory_assets",
                "inventory_keys",
            ] {
                statements.push((
                    format!("DELETE FROM {table} WHERE tenant_id = ?1"),
                    vec![text(tenant_id)],
                ));
            }
        }
        // The shared SDP rate-limit state is no data of the tenant's.
        statements.push((
            "DELETE FROM sdp_rate_limit WHERE tenant_id = ?1".into(),
            vec![text(tenant_id)],
        ));
        statements.push(("DELETE FROM tenants WHERE tenant_id = ?1".into(), vec![text(tenant_id)]));
        let counts = self.writer.exec(statements).await?;
        Ok(counts.last().copied().unwrap_or(0) > 0)
    }

    async fn tenant_by_api_token_hash(&self, hash: &str) -> Result<Option<Tenant>, StoreError> {
        let sealer = &self.options.sealer;
        Ok(self
            .query_all(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE api_token_hash = ?1"),
                vec![text(hash)],
                |r| tenant_of(sealer, r),
            )
            .await?
            .pop())
    }

    async fn tenant_has_data(&self, tenant_id: &str) -> Result<bool, StoreError> {
        let r = &self.options.retention;
        let found = self
            .query_all(
                "SELECT EXISTS (SELECT 1 FROM enhancement_history WHERE tenant_id = ?1)
                     OR EXISTS (SELECT 1 FROM feedback WHERE tenant_id = ?1)
                     OR EXISTS (SELECT 1 FROM search_docs WHERE tenant_id = ?1)
                     OR EXISTS (SELECT 1 FROM inventory_assets WHERE tenant_id = ?1)
                     OR EXISTS (SELECT 1 FROM webhook_dedup WHERE tenant_id = ?1 AND created_at_ms >= ?2)
                     OR EXISTS (SELECT 1 FROM event_dedup WHERE tenant_id = ?1 AND created_at_ms >= ?3)
                     OR EXISTS (SELECT 1 FROM note_idempotency WHERE tenant_id = ?1 AND updated_at_ms >= ?4)",
                vec![
                    text(tenant_id),
                    self.expired_before(r.webhook_claims).into(),
                    self.expired_before(r.event_claims).into(),
                    self.expired_before(r.note_records).into(),
                ],
                |row| row.get::<i64>(0).map_err(corrupt),
            )
            .await?;
        Ok(found.first().copied().unwrap_or(0) != 0)
    }
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn put_history(&self, r: &HistoryRow) -> Result<(), StoreError> {
        let timings = serde_json::to_string(&r.timings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.exec(
            &format!("INSERT OR REPLACE INTO enhancement_history ({HISTORY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)"),
            vec![
                text(&r.tenant_id),
                text(&r.job_id),
                text(&r.ticket_id),
                text(&r.correlation_id),
                text(r.status.as_str()),
                opt_text(&r.method),
                opt_text(&r.error_message),
                opt_text(&r.failed_stage),
                opt_text(&r.subject),
                opt_text(&r.description),
                opt_text(&r.note_text),
                opt_text(&r.note_id),
                i64::from(r.counts.similar_tickets).into(),
                i64::from(r.counts.kb_articles).into(),
                i64::from(r.counts.ip_references).into(),
                i64::from(r.counts.context_nodes_success).into(),
                i64::from(r.counts.context_nodes_failed).into(),
                timings.into(),
                r.received_at_ms.into(),
                r.completed_at_ms.into(),
                opt_text(&r.llm.prompt_version),
                opt_text(&r.llm.model),
                r.llm.tokens_in.into(),
                r.llm.tokens_out.into(),
                r.llm.cost_usd.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn history_by_job(&self, tenant_id: &str, job_id: &str) -> Result<Option<HistoryRow>, StoreError> {
        Ok(self
            .query_all(
                &format!("SELECT {HISTORY_COLUMNS} FROM enhancement_history WHERE tenant_id = ?1 AND job_id = ?2"),
                vec![text(tenant_id), text(job_id)],
                history_of,
            )
            .await?
            .pop())
    }

    async fn history_by_ticket(&self, tenant_id: &str, ticket_id: &str) -> Result<Vec<HistoryRow>, StoreError> {
        self.query_all(
            &format!("SELECT {HISTORY_COLUMNS} FROM enhancement_history WHERE tenant_id = ?1 AND ticket_id = ?2 ORDER BY completed_at_ms DESC, job_id"),
            vec![text(tenant_id), text(ticket_id)],
            history_of,
        )
        .await
    }

    async fn history_by_correlation(
        &self,
        tenant_id: &str,
        correlation_id: &str,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.query_all(
            &format!("SELECT {HISTORY_COLUMNS} FROM enhancement_history WHERE tenant_id = ?1 AND correlation_id = ?2 ORDER BY completed_at_ms DESC, job_id"),
            vec![text(tenant_id), text(correlation_id)],
            history_of,
        )
        .await
    }

    async fn history_between(
        &self,
        tenant_id: &str,
        from_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.query_all(
            &format!("SELECT {HISTORY_COLUMNS} FROM enhancement_history WHERE tenant_id = ?1 AND completed_at_ms >= ?2 AND completed_at_ms < ?3 ORDER BY completed_at_ms DESC, job_id LIMIT ?4"),
            vec![text(tenant_id), from_ms.into(), until_ms.into(), i64::from(limit).into()],
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
            vec![
                text(&f.tenant_id),
                text(&f.feedback_id),
                text(&f.job_id),
                text(&f.ticket_id),
                i64::from(f.rating).into(),
                f.helpful.map(|h| Value::Integer(h as i64)).unwrap_or(Value::Null),
                opt_text(&f.comment),
                opt_text(&f.technician),
                f.created_at_ms.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn list_feedback(&self, tenant_id: &str, from_ms: i64, until_ms: i64) -> Result<Vec<Feedback>, StoreError> {
        self.query_all(
            "SELECT tenant_id, feedback_id, job_id, ticket_id, rating, helpful, comment, technician, created_at_ms FROM feedback WHERE tenant_id = ?1 AND created_at_ms >= ?2 AND created_at_ms < ?3 ORDER BY created_at_ms, feedback_id",
            vec![text(tenant_id), from_ms.into(), until_ms.into()],
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
                "SELECT state, note_id FROM note_idempotency WHERE tenant_id = ?1 AND job_id = ?2 AND updated_at_ms >= ?3",
                vec![
                    text(tenant_id),
                    text(job_id),
                    self.expired_before(self.options.retention.note_records).into(),
                ],
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
        let expired = self.expired_before(self.options.retention.note_records);
        self.writer
            .exec(vec![
                (
                    "DELETE FROM note_idempotency WHERE tenant_id = ?1 AND job_id = ?2 AND updated_at_ms < ?3".into(),
                    vec![text(tenant_id), text(job_id), expired.into()],
                ),
                (
                    "INSERT OR IGNORE INTO note_idempotency (tenant_id, job_id, ticket_id, state, note_id, updated_at_ms) VALUES (?1, ?2, ?3, 'pending', NULL, ?4)".into(),
                    vec![text(tenant_id), text(job_id), text(ticket_id), now_ms().into()],
                ),
            ])
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
            vec![text(tenant_id), text(job_id), text(ticket_id), text(note_id), now_ms().into()],
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
        let expired = self.expired_before(self.options.retention.webhook_claims);
        self.writer
            .claim(tenant_id, webhook_id, job_id, correlation_id, stale_after_ms, expired)
            .await
    }

    async fn confirm_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        self.writer.confirm(tenant_id, webhook_id).await
    }

    async fn release_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        self.writer.release(tenant_id, webhook_id).await
    }

    async fn claim_event(
        &self,
        tenant_id: &str,
        ticket_id: &str,
        event: &str,
        job_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let expired = self.expired_before(self.options.retention.event_claims);
        self.writer
            .claim_event(tenant_id, ticket_id, event, job_id, expired)
            .await
    }
}

#[async_trait]
impl super::SdpRateStore for EmbeddedStore {
    async fn sdp_rate_tat(&self, tenant_id: &str) -> Result<Option<i64>, StoreError> {
        let rows = self
            .query_all(
                "SELECT tat_ms FROM sdp_rate_limit WHERE tenant_id = ?1",
                vec![text(tenant_id)],
                |row| row.get::<i64>(0).map_err(corrupt),
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn swap_sdp_rate_tat(&self, tenant_id: &str, expected: Option<i64>, new: i64) -> Result<bool, StoreError> {
        let n = match expected {
            None => {
                self.exec(
                    "INSERT INTO sdp_rate_limit (tenant_id, tat_ms) VALUES (?1, ?2) ON CONFLICT(tenant_id) DO NOTHING",
                    vec![text(tenant_id), new.into()],
                )
                .await?
            }
            Some(old) => {
                self.exec(
                    "UPDATE sdp_rate_limit SET tat_ms = ?2 WHERE tenant_id = ?1 AND tat_ms = ?3",
                    vec![text(tenant_id), new.into(), old.into()],
                )
                .await?
            }
        };
        Ok(n == 1)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.query_all("SELECT 1", vec![], |r| r.get::<i64>(0).map_err(corrupt))
            .await?;
        Ok(())
    }
}
