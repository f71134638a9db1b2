//! The embedded store's one writer: every write of this process goes
//! through this task, on a connection of its own, group-committed. Ingest's
//! claim, confirm and release writes sit on the webhook's hot path; the
//! stages' history, note and event-claim writes share the same commits.
//! No caller holds a lock across I/O: callers queue an operation and await
//! its answer, and readers use their own connections (WAL).
//!
//! Every operation is still durable (as durable as the store's WAL with
//! `synchronous = NORMAL`) before its caller hears back, as when each ran
//! alone: a claim is written before the record is produced, a confirm before
//! the `202`. What changes is that the operations waiting at the same moment
//! share one transaction on a connection of their own, with statements
//! prepared once. At 4,000 webhooks/s one commit per operation (two per
//! webhook) cost 17 % of the machine's CPU, most of it the WAL write of each
//! commit; see the README's benchmarks.

use std::time::Duration;

use std::collections::HashMap;

use libsql::{params, Connection, Statement, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{StoreError, WebhookClaim};
use crate::now_ms;

/// Most operations committed together.
const MAX_BATCH: usize = 512;
/// Operations waiting for the writer before callers wait for room.
const QUEUE: usize = 4096;

/// A libSQL error as the store reports it: a violated constraint is the
/// request's fault (permanent); anything else (busy, I/O) may pass.
pub(super) fn unavailable(e: libsql::Error) -> StoreError {
    match &e {
        libsql::Error::SqliteFailure(code, _) if code & 0xff == 19 => StoreError::Rejected(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn corrupt(e: libsql::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Statements run together, all or none (one savepoint).
pub(super) type WriteBatch = Vec<(String, Vec<Value>)>;

enum Op {
    Claim {
        tenant_id: String,
        webhook_id: String,
        job_id: String,
        correlation_id: String,
        stale_after_ms: i64,
        /// Claims created before this are expired (treated as absent).
        expired_before_ms: i64,
        reply: oneshot::Sender<Result<WebhookClaim, StoreError>>,
    },
    ClaimEvent {
        tenant_id: String,
        ticket_id: String,
        event: String,
        job_id: String,
        expired_before_ms: i64,
        reply: oneshot::Sender<Result<Option<String>, StoreError>>,
    },
    /// Any other write: its statements' changed-row counts.
    Exec {
        statements: WriteBatch,
        reply: oneshot::Sender<Result<Vec<u64>, StoreError>>,
    },
    Confirm {
        tenant_id: String,
        webhook_id: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Release {
        tenant_id: String,
        webhook_id: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The handle ingest's store calls go through. The writer task ends when
/// the last handle is dropped.
#[derive(Clone)]
pub(super) struct Ledger {
    ops: mpsc::Sender<Op>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("the webhook ledger's writer stopped".into())
}

impl Ledger {
    /// Opens a second connection to the store's file for the writer.
    pub(super) async fn open(db: &libsql::Database, busy_timeout: Duration) -> Result<Self, StoreError> {
        let conn = db.connect().map_err(unavailable)?;
        conn.busy_timeout(busy_timeout).map_err(unavailable)?;
        // Per connection, like the store's own: WAL syncs at checkpoints,
        // not on every commit (an acknowledged write survives a process
        // crash, not necessarily a power loss).
        conn.execute("PRAGMA synchronous=NORMAL", ())
            .await
            .map_err(unavailable)?;
        let statements = Statements::prepare(&conn).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        // Its own thread: libSQL's calls block (waiting for another
        // process's write lock up to the busy timeout), which must not hold
        // a runtime worker.
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(write(conn, statements, rx)),
                    Err(e) => warn!(error = %e, "the store writer could not start a runtime"),
                },
            )
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Ledger { ops: tx })
    }

    async fn call<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(op(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub(super) async fn claim(
        &self,
        tenant_id: &str,
        webhook_id: &str,
        job_id: &str,
        correlation_id: &str,
        stale_after_ms: i64,
        expired_before_ms: i64,
    ) -> Result<WebhookClaim, StoreError> {
        self.call(|reply| Op::Claim {
            tenant_id: tenant_id.into(),
            webhook_id: webhook_id.into(),
            job_id: job_id.into(),
            correlation_id: correlation_id.into(),
            stale_after_ms,
            expired_before_ms,
            reply,
        })
        .await
    }

    pub(super) async fn claim_event(
        &self,
        tenant_id: &str,
        ticket_id: &str,
        event: &str,
        job_id: &str,
        expired_before_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.call(|reply| Op::ClaimEvent {
            tenant_id: tenant_id.into(),
            ticket_id: ticket_id.into(),
            event: event.into(),
            job_id: job_id.into(),
            expired_before_ms,
            reply,
        })
        .await
    }

    /// Runs `statements` atomically in the next group commit.
    pub(super) async fn exec(&self, statements: WriteBatch) -> Result<Vec<u64>, StoreError> {
        self.call(|reply| Op::Exec { statements, reply }).await
    }

    /// One statement.
    pub(super) async fn exec_one(&self, sql: impl Into<String>, values: Vec<Value>) -> Result<u64, StoreError> {
        Ok(self.exec(vec![(sql.into(), values)]).await?.pop().unwrap_or(0))
    }

    pub(super) async fn confirm(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        self.call(|reply| Op::Confirm {
            tenant_id: tenant_id.into(),
            webhook_id: webhook_id.into(),
            reply,
        })
        .await
    }

    pub(super) async fn release(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        self.call(|reply| Op::Release {
            tenant_id: tenant_id.into(),
            webhook_id: webhook_id.into(),
            reply,
        })
        .await
    }
}

/// The writer's statements, prepared once; each is reset before it runs.
struct Statements {
    /// An expired claim (past retention, not swept yet) becomes a new one.
    renew: Statement,
    event_renew: Statement,
    event_insert: Statement,
    event_select: Statement,
    /// Statements of `Exec` operations, prepared on first use.
    cached: HashMap<String, Statement>,
    insert: Statement,
    select: Statement,
    take_over: Statement,
    confirm: Statement,
    release: Statement,
}

impl Statements {
    async fn prepare(conn: &Connection) -> Result<Self, StoreError> {
        let p = |sql: &'static str| async move { conn.prepare(sql).await.map_err(unavailable) };
        Ok(Statements {
            renew: p("UPDATE webhook_dedup SET job_id = ?3, correlation_id = ?4, state = 'pending', created_at_ms = ?5 WHERE tenant_id = ?1 AND webhook_id = ?2 AND created_at_ms = ?6").await?,
            event_renew: p("UPDATE event_dedup SET job_id = ?4, created_at_ms = ?5 WHERE tenant_id = ?1 AND ticket_id = ?2 AND event = ?3 AND created_at_ms = ?6").await?,
            event_insert: p("INSERT OR IGNORE INTO event_dedup (tenant_id, ticket_id, event, job_id, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)").await?,
            event_select: p("SELECT job_id, created_at_ms FROM event_dedup WHERE tenant_id = ?1 AND ticket_id = ?2 AND event = ?3").await?,
            cached: HashMap::new(),
            insert: p("INSERT OR IGNORE INTO webhook_dedup (tenant_id, webhook_id, job_id, correlation_id, state, created_at_ms) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)").await?,
            select: p("SELECT job_id, correlation_id, state, created_at_ms FROM webhook_dedup WHERE tenant_id = ?1 AND webhook_id = ?2").await?,
            take_over: p("UPDATE webhook_dedup SET state = 'pending', created_at_ms = ?3 WHERE tenant_id = ?1 AND webhook_id = ?2 AND state = ?4 AND created_at_ms = ?5").await?,
            confirm: p("UPDATE webhook_dedup SET state = 'accepted' WHERE tenant_id = ?1 AND webhook_id = ?2").await?,
            release: p("UPDATE webhook_dedup SET state = 'released' WHERE tenant_id = ?1 AND webhook_id = ?2 AND state = 'pending'").await?,
        })
    }
}

async fn execute(stmt: &Statement, p: impl libsql::params::IntoParams) -> Result<u64, StoreError> {
    stmt.reset();
    let n = stmt.execute(p).await.map_err(unavailable)?;
    stmt.reset();
    Ok(n as u64)
}

/// Claims one `webhook-id` inside the writer's open transaction (the same
/// decisions as one statement at a time: insert, or read the first claim and
/// take it over when released or stale).
async fn claim(
    s: &Statements,
    tenant_id: &str,
    webhook_id: &str,
    job_id: &str,
    correlation_id: &str,
    stale_after_ms: i64,
    expired_before_ms: i64,
) -> Result<WebhookClaim, StoreError> {
    let now = now_ms();
    if execute(&s.insert, params![tenant_id, webhook_id, job_id, correlation_id, now]).await? > 0 {
        return Ok(WebhookClaim::Proceed {
            job_id: job_id.to_string(),
            correlation_id: correlation_id.to_string(),
        });
    }
    s.select.reset();
    let first = {
        let mut rows = s
            .select
            .query(params![tenant_id, webhook_id])
            .await
            .map_err(unavailable)?;
        match rows.next().await.map_err(unavailable)? {
            None => None,
            Some(row) => Some((
                row.get::<String>(0).map_err(corrupt)?,
                row.get::<String>(1).map_err(corrupt)?,
                row.get::<String>(2).map_err(corrupt)?,
                row.get::<i64>(3).map_err(corrupt)?,
            )),
        }
    };
    s.select.reset();
    let Some((first_job, first_corr, state, created)) = first else {
        return Ok(WebhookClaim::InFlight);
    };
    if created < expired_before_ms {
        // Past its retention (the sweep has not come yet): as if absent.
        if execute(
            &s.renew,
            params![tenant_id, webhook_id, job_id, correlation_id, now, created],
        )
        .await?
            > 0
        {
            return Ok(WebhookClaim::Proceed {
                job_id: job_id.to_string(),
                correlation_id: correlation_id.to_string(),
            });
        }
        return Ok(WebhookClaim::InFlight);
    }
    if state == "accepted" {
        return Ok(WebhookClaim::Accepted {
            job_id: first_job,
            correlation_id: first_corr,
        });
    }
    if (state == "released" || now - created > stale_after_ms)
        && execute(&s.take_over, params![tenant_id, webhook_id, now, state, created]).await? > 0
    {
        return Ok(WebhookClaim::Proceed {
            job_id: first_job,
            correlation_id: first_corr,
        });
    }
    Ok(WebhookClaim::InFlight)
}

/// An operation's outcome, held until its transaction commits.
enum Done {
    Claim(
        oneshot::Sender<Result<WebhookClaim, StoreError>>,
        Result<WebhookClaim, StoreError>,
    ),
    Unit(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Event(
        oneshot::Sender<Result<Option<String>, StoreError>>,
        Result<Option<String>, StoreError>,
    ),
    Exec(
        oneshot::Sender<Result<Vec<u64>, StoreError>>,
        Result<Vec<u64>, StoreError>,
    ),
}

impl Done {
    fn answer(self, committed: &Result<(), StoreError>) {
        match (self, committed) {
            (Done::Claim(reply, result), Ok(())) => {
                let _ = reply.send(result);
            }
            (Done::Unit(reply, result), Ok(())) => {
                let _ = reply.send(result);
            }
            (Done::Event(reply, result), Ok(())) => {
                let _ = reply.send(result);
            }
            (Done::Exec(reply, result), Ok(())) => {
                let _ = reply.send(result);
            }
            (Done::Claim(reply, _), Err(e)) => {
                let _ = reply.send(Err(e.clone()));
            }
            (Done::Event(reply, _), Err(e)) => {
                let _ = reply.send(Err(e.clone()));
            }
            (Done::Exec(reply, _), Err(e)) => {
                let _ = reply.send(Err(e.clone()));
            }
            (Done::Unit(reply, _), Err(e)) => {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Claims `(ticket, event)` for `job_id`; the job that has it when not ours.
async fn claim_event(
    s: &Statements,
    tenant_id: &str,
    ticket_id: &str,
    event: &str,
    job_id: &str,
    expired_before_ms: i64,
) -> Result<Option<String>, StoreError> {
    let now = now_ms();
    if execute(&s.event_insert, params![tenant_id, ticket_id, event, job_id, now]).await? > 0 {
        return Ok(None);
    }
    s.event_select.reset();
    let first = {
        let mut rows = s
            .event_select
            .query(params![tenant_id, ticket_id, event])
            .await
            .map_err(unavailable)?;
        match rows.next().await.map_err(unavailable)? {
            Some(row) => Some((
                row.get::<String>(0).map_err(corrupt)?,
                row.get::<i64>(1).map_err(corrupt)?,
            )),
            None => None,
        }
    };
    s.event_select.reset();
    let Some((first, created)) = first else {
        return Ok(None);
    };
    if created < expired_before_ms
        && execute(
            &s.event_renew,
            params![tenant_id, ticket_id, event, job_id, now, created],
        )
        .await?
            > 0
    {
        return Ok(None);
    }
    Ok(Some(first).filter(|f| f != job_id))
}

/// Runs an `Exec` operation's statements inside a savepoint, so they apply
/// all or none although they share the group's transaction.
async fn exec_all(conn: &Connection, s: &mut Statements, statements: WriteBatch) -> Result<Vec<u64>, StoreError> {
    conn.execute("SAVEPOINT op", ()).await.map_err(unavailable)?;
    let mut counts = Vec::with_capacity(statements.len());
    let mut failed = None;
    for (sql, values) in statements {
        let stmt = match s.cached.get(&sql) {
            Some(stmt) => stmt,
            None => match conn.prepare(&sql).await {
                Ok(stmt) => s.cached.entry(sql).or_insert(stmt),
                Err(e) => {
                    failed = Some(unavailable(e));
                    break;
                }
            },
        };
        match execute(stmt, values).await {
            Ok(n) => counts.push(n),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match failed {
        None => {
            conn.execute("RELEASE op", ()).await.map_err(unavailable)?;
            Ok(counts)
        }
        Some(e) => {
            let _ = conn.execute("ROLLBACK TO op", ()).await;
            let _ = conn.execute("RELEASE op", ()).await;
            Err(e)
        }
    }
}

async fn run_op(conn: &Connection, s: &mut Statements, op: Op) -> Done {
    match op {
        Op::Claim {
            tenant_id,
            webhook_id,
            job_id,
            correlation_id,
            stale_after_ms,
            expired_before_ms,
            reply,
        } => {
            let r = claim(
                s,
                &tenant_id,
                &webhook_id,
                &job_id,
                &correlation_id,
                stale_after_ms,
                expired_before_ms,
            )
            .await;
            Done::Claim(reply, r)
        }
        Op::ClaimEvent {
            tenant_id,
            ticket_id,
            event,
            job_id,
            expired_before_ms,
            reply,
        } => {
            let r = claim_event(s, &tenant_id, &ticket_id, &event, &job_id, expired_before_ms).await;
            Done::Event(reply, r)
        }
        Op::Exec { statements, reply } => {
            let r = exec_all(conn, s, statements).await;
            Done::Exec(reply, r)
        }
        Op::Confirm {
            tenant_id,
            webhook_id,
            reply,
        } => {
            let r = execute(&s.confirm, params![tenant_id, webhook_id]).await.map(|_| ());
            Done::Unit(reply, r)
        }
        Op::Release {
            tenant_id,
            webhook_id,
            reply,
        } => {
            let r = execute(&s.release, params![tenant_id, webhook_id]).await.map(|_| ());
            Done::Unit(reply, r)
        }
    }
}

/// The writer: takes what is waiting (up to [`MAX_BATCH`]), runs it in one
/// transaction, and answers every caller once the commit returned. A failed
/// commit answers all of them with its error (nothing of the batch was
/// written; each caller's request fails as a lone statement would have).
async fn write(conn: Connection, mut statements: Statements, mut ops: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if ops.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let mut done = Vec::with_capacity(batch.len());
        let committed = match conn.execute("BEGIN IMMEDIATE", ()).await {
            Err(e) => Err(unavailable(e)),
            Ok(_) => {
                let mut ops_now = std::mem::take(&mut batch).into_iter();
                let mut aborted = false;
                for op in ops_now.by_ref() {
                    done.push(run_op(&conn, &mut statements, op).await);
                    // An error of the abort class (disk full, I/O) rolls the
                    // whole transaction back: nothing of the batch stands,
                    // and what follows must not run outside it.
                    if conn.is_autocommit() {
                        aborted = true;
                        break;
                    }
                }
                batch.extend(ops_now);
                if aborted {
                    Err(StoreError::Unavailable(
                        "the store rolled back the write transaction (disk full or I/O error)".into(),
                    ))
                } else {
                    match conn.execute("COMMIT", ()).await {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            let _ = conn.execute("ROLLBACK", ()).await;
                            Err(unavailable(e))
                        }
                    }
                }
            }
        };
        if let Err(e) = &committed {
            warn!(error = %e, operations = done.len() + batch.len(), "store write transaction failed");
            // Operations never run (BEGIN failed) get the same error.
            for op in batch.drain(..) {
                match op {
                    Op::Claim { reply, .. } => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    Op::ClaimEvent { reply, .. } => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    Op::Exec { reply, .. } => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    Op::Confirm { reply, .. } | Op::Release { reply, .. } => {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        for d in done {
            d.answer(&committed);
        }
    }
}
