//! The ScyllaDB store (`SCYLLA_NODES` set): one table per query (see
//! `migrations/README.md`), prepared statements, token- and DC-aware load
//! balancing, `LOCAL_QUORUM` by default, a request timeout per statement,
//! paged reads, and lightweight transactions (`IF NOT EXISTS` / `IF ...`)
//! for every claim so two hosts can never both win one.
//!
//! Errors are classified where they are born ([`classify_execution_error`]):
//! timeouts, unavailable replicas, overload and broken connections are
//! [`StoreError::Unavailable`] (retryable); invalid or unauthorised queries
//! are [`StoreError::Rejected`] (permanent).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{
    DbError, ExecutionError, NewSessionError, NextPageError, NextRowError, PagerExecutionError, PrepareError,
    RequestAttemptError, RequestError,
};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use scylla::{DeserializeRow, SerializeRow};
use sha2::{Digest, Sha256};

mod index;

use super::migrate::{self, Applied};
use super::seal::{open_tenant_secrets, sdp_credentials, seal_tenant_secrets};
use super::*;
use crate::now_ms;
use crate::servicedesk::{SdpAuth, SdpTenant};

/// Partitions per tenant of each claims table: claims of one tenant spread
/// over this many partitions (so lightweight transactions of one busy
/// tenant do not contend on one partition), few enough that `tenants remove
/// --purge` can delete them all by key.
pub const CLAIM_BUCKETS: i32 = 64;

/// Most days a time-range read walks (the API's range is at most 366 days).
const MAX_DAYS: usize = 400;

/// Connection settings, from `SCYLLA_*` variables.
#[derive(Clone)]
pub struct ScyllaConfig {
    pub nodes: Vec<String>,
    /// `SCYLLA_LOCAL_DC`: requests go to this datacenter's replicas only.
    pub local_dc: Option<String>,
    /// `SCYLLA_KEYSPACE` (default `ticketflow`).
    pub keyspace: String,
    /// The keyspace's replication as a CQL map (from `SCYLLA_REPLICATION`).
    pub replication: String,
    /// `SCYLLA_CONSISTENCY` (default `LOCAL_QUORUM`).
    pub consistency: Consistency,
    /// `SCYLLA_SERIAL_CONSISTENCY` (default `SERIAL`): the Paxos round of
    /// claims. `LOCAL_SERIAL` is linearizable within one datacenter only:
    /// use it only when a single datacenter takes writes.
    pub serial_consistency: SerialConsistency,
    /// `SCYLLA_TABLETS=disabled` creates the keyspace with tablets off, for
    /// ScyllaDB versions that do not support lightweight transactions on
    /// tablets keyspaces; unset: the server's default.
    pub tablets_disabled: bool,
    /// `SCYLLA_REQUEST_TIMEOUT_MS` (default 5000): each statement's client timeout.
    pub request_timeout: Duration,
    /// `SCYLLA_CONNECT_TIMEOUT_MS` (default 5000).
    pub connect_timeout: Duration,
    /// `SCYLLA_USERNAME` with `SCYLLA_PASSWORD` or `SCYLLA_PASSWORD_FILE`.
    pub username: Option<String>,
    pub password: Option<crate::Secret>,
    /// `SCYLLA_TLS_CA_FILE`: TLS to every node, verified against this CA (PEM).
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("local_dc", &self.local_dc)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("tablets_disabled", &self.tablets_disabled)
            .field("request_timeout", &self.request_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Ok(match s.trim().to_ascii_uppercase().as_str() {
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        weak @ ("ONE" | "TWO" | "THREE" | "LOCAL_ONE" | "ANY") => {
            return Err(format!(
                "SCYLLA_CONSISTENCY {weak} is refused: a read below a quorum can miss a committed claim or note record and post a second note; use LOCAL_QUORUM, QUORUM, EACH_QUORUM or ALL"
            ))
        }
        other => {
            return Err(format!(
                "invalid SCYLLA_CONSISTENCY '{other}': use LOCAL_QUORUM, QUORUM, EACH_QUORUM or ALL"
            ))
        }
    })
}

fn is_cql_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `SCYLLA_REPLICATION`: `NetworkTopologyStrategy:3` (every DC),
/// `NetworkTopologyStrategy:dc1=3,dc2=3`, or `SimpleStrategy:1` (one-DC test
/// clusters) → the CQL replication map.
pub fn parse_replication(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("invalid SCYLLA_REPLICATION '{s}': {why} (e.g. NetworkTopologyStrategy:3, NetworkTopologyStrategy:dc1=3,dc2=2, SimpleStrategy:1)")
    };
    let (class, spec) = s.trim().split_once(':').ok_or_else(|| bad("expected CLASS:FACTORS"))?;
    let factor = |f: &str| -> Result<u32, String> {
        f.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=15).contains(n))
            .ok_or_else(|| bad("a replication factor must be 1-15"))
    };
    match class.trim() {
        "SimpleStrategy" => Ok(format!(
            "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            factor(spec)?
        )),
        "NetworkTopologyStrategy" if !spec.contains('=') => Ok(format!(
            "{{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
            factor(spec)?
        )),
        "NetworkTopologyStrategy" => {
            let mut parts = Vec::new();
            for pair in spec.split(',') {
                let (dc, n) = pair.split_once('=').ok_or_else(|| bad("expected dc=factor pairs"))?;
                let dc = dc.trim();
                if dc.is_empty() || !dc.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                    return Err(bad("a datacenter name may hold letters, digits, '_', '-' and '.'"));
                }
                parts.push(format!("'{dc}': {}", factor(n)?));
            }
            Ok(format!("{{'class': 'NetworkTopologyStrategy', {}}}", parts.join(", ")))
        }
        _ => Err(bad("the class must be NetworkTopologyStrategy or SimpleStrategy")),
    }
}

impl ScyllaConfig {
    /// Reads the `SCYLLA_*` settings through `get` (the process's
    /// configuration); `nodes` is `SCYLLA_NODES` (comma-separated host:port).
    pub fn from_vars(nodes: &str, get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let nodes: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                if n.contains(':') {
                    n.to_string()
                } else {
                    format!("{n}:9042")
                }
            })
            .collect();
        if nodes.is_empty() {
            return Err("SCYLLA_NODES is set but names no node (expected host[:port],...)".into());
        }
        let keyspace = get("SCYLLA_KEYSPACE").unwrap_or_else(|| "ticketflow".into());
        if !is_cql_identifier(&keyspace) {
            return Err(format!(
                "invalid SCYLLA_KEYSPACE '{keyspace}': 1-48 letters, digits or '_', starting with a letter"
            ));
        }
        let ms = |name: &str, default: u64| -> Result<Duration, String> {
            match get(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| format!("invalid {name} '{v}': a positive number of milliseconds")),
            }
        };
        let password = match (get("SCYLLA_PASSWORD"), get("SCYLLA_PASSWORD_FILE")) {
            (Some(_), Some(_)) => return Err("set SCYLLA_PASSWORD or SCYLLA_PASSWORD_FILE, not both".into()),
            (Some(p), None) => Some(crate::Secret::new(p)),
            (None, Some(f)) => Some(crate::Secret::new(
                std::fs::read_to_string(&f)
                    .map_err(|e| format!("cannot read SCYLLA_PASSWORD_FILE {f}: {e}"))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            )),
            (None, None) => None,
        };
        let username = get("SCYLLA_USERNAME");
        if username.is_some() != password.is_some() {
            return Err("SCYLLA_USERNAME and a password (SCYLLA_PASSWORD or SCYLLA_PASSWORD_FILE) go together".into());
        }
        Ok(ScyllaConfig {
            nodes,
            local_dc: get("SCYLLA_LOCAL_DC").filter(|d| !d.trim().is_empty()),
            keyspace,
            replication: parse_replication(
                &get("SCYLLA_REPLICATION").unwrap_or_else(|| "NetworkTopologyStrategy:3".into()),
            )?,
            consistency: parse_consistency(&get("SCYLLA_CONSISTENCY").unwrap_or_else(|| "LOCAL_QUORUM".into()))?,
            serial_consistency: match get("SCYLLA_SERIAL_CONSISTENCY")
                .unwrap_or_else(|| "SERIAL".into())
                .trim()
                .to_ascii_uppercase()
                .as_str()
            {
                "SERIAL" => SerialConsistency::Serial,
                "LOCAL_SERIAL" => SerialConsistency::LocalSerial,
                other => {
                    return Err(format!(
                        "invalid SCYLLA_SERIAL_CONSISTENCY '{other}': use SERIAL or LOCAL_SERIAL"
                    ))
                }
            },
            tablets_disabled: match get("SCYLLA_TABLETS").as_deref().map(str::trim) {
                None | Some("default") => false,
                Some("disabled") => true,
                Some(other) => return Err(format!("invalid SCYLLA_TABLETS '{other}': use default or disabled")),
            },
            request_timeout: ms("SCYLLA_REQUEST_TIMEOUT_MS", 5000)?,
            connect_timeout: ms("SCYLLA_CONNECT_TIMEOUT_MS", 5000)?,
            username,
            password,
            tls_ca_file: get("SCYLLA_TLS_CA_FILE").map(PathBuf::from),
        })
    }

    fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, StoreError> {
        let Some(path) = &self.tls_ca_file else {
            return Ok(None);
        };
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| StoreError::Rejected(format!("cannot read SCYLLA_TLS_CA_FILE {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                StoreError::Rejected(format!(
                    "SCYLLA_TLS_CA_FILE {} holds a bad certificate: {e}",
                    path.display()
                ))
            })?;
            roots
                .add(cert)
                .map_err(|e| StoreError::Rejected(format!("SCYLLA_TLS_CA_FILE {}: {e}", path.display())))?;
        }
        if roots.is_empty() {
            return Err(StoreError::Rejected(format!(
                "SCYLLA_TLS_CA_FILE {} holds no certificate",
                path.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Rejected(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    /// A session with the configured balancing, consistency and timeouts.
    pub async fn connect(&self) -> Result<Session, StoreError> {
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &self.local_dc {
            policy = policy.prefer_datacenter(dc.clone()).permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .consistency(self.consistency)
            .serial_consistency(Some(self.serial_consistency))
            .request_timeout(Some(self.request_timeout))
            .load_balancing_policy(policy.build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&self.nodes)
            .connection_timeout(self.connect_timeout)
            .default_execution_profile_handle(profile.into_handle());
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            builder = builder.user(user.clone(), password.expose().to_string());
        }
        if let Some(tls) = self.tls()? {
            builder = builder.tls_context(Some(tls));
        }
        builder.build().await.map_err(|e| classify_new_session(&self.nodes, e))
    }
}

fn classify_new_session(nodes: &[String], e: NewSessionError) -> StoreError {
    let text = format!("cannot connect to ScyllaDB at {}: {e}", nodes.join(","));
    match e {
        NewSessionError::EmptyKnownNodesList | NewSessionError::FailedToResolveAnyHostname(_) => {
            StoreError::Rejected(text)
        }
        _ => StoreError::Unavailable(text),
    }
}

/// Whether a server error is worth retrying: the replicas were unavailable,
/// slow, overloaded or starting; not when the request itself is wrong.
fn db_error_is_transient(e: &DbError) -> bool {
    match e {
        DbError::SyntaxError
        | DbError::Invalid
        | DbError::AlreadyExists { .. }
        | DbError::FunctionFailure { .. }
        | DbError::AuthenticationError
        | DbError::Unauthorized
        | DbError::ConfigError
        | DbError::ProtocolError => false,
        // Unavailable, Overloaded, IsBootstrapping, ReadTimeout,
        // WriteTimeout, ReadFailure, WriteFailure, Unprepared, ServerError,
        // TruncateError, RateLimitReached and codes this driver does not
        // know: the same request may succeed later.
        _ => true,
    }
}

fn classify_attempt(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::DbError(db, _) => db_error_is_transient(db),
        // Our statement or its values are wrong: the same request fails again.
        RequestAttemptError::SerializationError(_) | RequestAttemptError::CqlRequestSerialization(_) => false,
        // Broken connections, no free stream, unparsable responses.
        _ => true,
    }
}

fn sort(transient: bool, text: String) -> StoreError {
    if transient {
        StoreError::Unavailable(text)
    } else {
        StoreError::Rejected(text)
    }
}

/// Sorts a driver error into retryable ([`StoreError::Unavailable`]) or
/// permanent ([`StoreError::Rejected`]).
pub fn classify_execution_error(e: &ExecutionError) -> StoreError {
    let transient = match e {
        ExecutionError::LastAttemptError(a) => classify_attempt(a),
        ExecutionError::BadQuery(_) | ExecutionError::UseKeyspaceError(_) => false,
        ExecutionError::PrepareError(p) => prepare_is_transient(p),
        // Client timeout, no connection, empty plan, schema agreement.
        _ => true,
    };
    sort(transient, format!("ScyllaDB: {e}"))
}

fn prepare_is_transient(e: &PrepareError) -> bool {
    match e {
        PrepareError::AllAttemptsFailed { first_attempt } => classify_attempt(first_attempt),
        _ => true,
    }
}

fn classify_prepare(e: &PrepareError) -> StoreError {
    sort(prepare_is_transient(e), format!("ScyllaDB prepare: {e}"))
}

fn classify_request_error(e: &RequestError) -> bool {
    match e {
        RequestError::LastAttemptError(a) => classify_attempt(a),
        _ => true,
    }
}

fn classify_pager(e: &PagerExecutionError) -> StoreError {
    let transient = match e {
        PagerExecutionError::PrepareError(p) => prepare_is_transient(p),
        PagerExecutionError::NextPageError(p) => next_page_is_transient(p),
        PagerExecutionError::SerializationError(_) => false,
        _ => true,
    };
    sort(transient, format!("ScyllaDB: {e}"))
}

fn next_page_is_transient(e: &NextPageError) -> bool {
    match e {
        NextPageError::RequestFailure(r) => classify_request_error(r),
        NextPageError::PartitionKeyError(_) | NextPageError::TypeCheckError(_) => false,
        _ => true,
    }
}

fn classify_next_row(e: &NextRowError) -> StoreError {
    match e {
        NextRowError::NextPageError(p) => sort(next_page_is_transient(p), format!("ScyllaDB: {e}")),
        _ => StoreError::Corrupt(format!("ScyllaDB row: {e}")),
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("ScyllaDB result: {e}"))
}

/// The claim partition a key falls in.
pub fn bucket_of(key: &str) -> i32 {
    let h = Sha256::digest(key.as_bytes());
    i32::from(u16::from_be_bytes([h[0], h[1]])) % CLAIM_BUCKETS
}

fn ttl_secs(d: Duration) -> i32 {
    d.as_secs().clamp(1, i32::MAX as u64) as i32
}

#[derive(Debug, Clone, SerializeRow, DeserializeRow)]
struct HistoryCql {
    tenant_id: String,
    job_id: String,
    ticket_id: String,
    correlation_id: String,
    day: String,
    status: String,
    method: Option<String>,
    error_message: Option<String>,
    failed_stage: Option<String>,
    subject: Option<String>,
    description: Option<String>,
    note_text: Option<String>,
    note_id: Option<String>,
    similar_tickets: i32,
    kb_articles: i32,
    ip_references: i32,
    nodes_success: i32,
    nodes_failed: i32,
    timings: HashMap<String, i64>,
    received_at_ms: i64,
    completed_at_ms: i64,
    prompt_version: Option<String>,
    model: Option<String>,
    tokens_in: Option<i64>,
    tokens_out: Option<i64>,
    cost_usd: Option<f64>,
}

const HISTORY_COLUMNS: &str = "tenant_id, job_id, ticket_id, correlation_id, day, status, method, error_message, failed_stage, subject, description, note_text, note_id, similar_tickets, kb_articles, ip_references, nodes_success, nodes_failed, timings, received_at_ms, completed_at_ms, prompt_version, model, tokens_in, tokens_out, cost_usd";
const HISTORY_MARKS: &str = ":tenant_id, :job_id, :ticket_id, :correlation_id, :day, :status, :method, :error_message, :failed_stage, :subject, :description, :note_text, :note_id, :similar_tickets, :kb_articles, :ip_references, :nodes_success, :nodes_failed, :timings, :received_at_ms, :completed_at_ms, :prompt_version, :model, :tokens_in, :tokens_out, :cost_usd";

impl From<&HistoryRow> for HistoryCql {
    fn from(r: &HistoryRow) -> Self {
        HistoryCql {
            tenant_id: r.tenant_id.clone(),
            job_id: r.job_id.clone(),
            ticket_id: r.ticket_id.clone(),
            correlation_id: r.correlation_id.clone(),
            day: day_of(r.completed_at_ms),
            status: r.status.as_str().to_string(),
            method: r.method.clone(),
            error_message: r.error_message.clone(),
            failed_stage: r.failed_stage.clone(),
            subject: r.subject.clone(),
            description: r.description.clone(),
            note_text: r.note_text.clone(),
            note_id: r.note_id.clone(),
            similar_tickets: r.counts.similar_tickets,
            kb_articles: r.counts.kb_articles,
            ip_references: r.counts.ip_references,
            nodes_success: r.counts.context_nodes_success,
            nodes_failed: r.counts.context_nodes_failed,
            timings: r.timings.clone(),
            received_at_ms: r.received_at_ms,
            completed_at_ms: r.completed_at_ms,
            prompt_version: r.llm.prompt_version.clone(),
            model: r.llm.model.clone(),
            tokens_in: r.llm.tokens_in,
            tokens_out: r.llm.tokens_out,
            cost_usd: r.llm.cost_usd,
        }
    }
}

impl TryFrom<HistoryCql> for HistoryRow {
    type Error = StoreError;
    fn try_from(c: HistoryCql) -> Result<Self, StoreError> {
        Ok(HistoryRow {
            status: HistoryStatus::parse(&c.status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown history status {}", c.status)))?,
            tenant_id: c.tenant_id,
            job_id: c.job_id,
            ticket_id: c.ticket_id,
            correlation_id: c.correlation_id,
            method: c.method,
            error_message: c.error_message,
            failed_stage: c.failed_stage,
            subject: c.subject,
            description: c.description,
            note_text: c.note_text,
            note_id: c.note_id,
            counts: ContextCountsRow {
                similar_tickets: c.similar_tickets,
                kb_articles: c.kb_articles,
                ip_references: c.ip_references,
                context_nodes_success: c.nodes_success,
                context_nodes_failed: c.nodes_failed,
            },
            timings: c.timings,
            received_at_ms: c.received_at_ms,
            completed_at_ms: c.completed_at_ms,
            llm: LlmUsageRow {
                prompt_version: c.prompt_version,
                model: c.model,
                tokens_in: c.tokens_in,
                tokens_out: c.tokens_out,
                cost_usd: c.cost_usd,
            },
        })
    }
}

/// No `Debug`: it holds the secret columns.
#[derive(Clone, SerializeRow, DeserializeRow)]
struct TenantCql {
    tenant_id: String,
    sdp_base_url: String,
    sdp_auth: String,
    sdp_token: String,
    webhook_secret: String,
    previous_webhook_secret: Option<String>,
    previous_valid_until_ms: i64,
    api_token_hash: String,
    requests_per_minute: i32,
    enabled_events: Vec<String>,
    suspended: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

const TENANT_COLUMNS: &str = "tenant_id, sdp_base_url, sdp_auth, sdp_token, webhook_secret, previous_webhook_secret, previous_valid_until_ms, api_token_hash, requests_per_minute, enabled_events, suspended, created_at_ms, updated_at_ms";
const TENANT_MARKS: &str = ":tenant_id, :sdp_base_url, :sdp_auth, :sdp_token, :webhook_secret, :previous_webhook_secret, :previous_valid_until_ms, :api_token_hash, :requests_per_minute, :enabled_events, :suspended, :created_at_ms, :updated_at_ms";

#[derive(Debug, Clone, SerializeRow, DeserializeRow)]
struct FeedbackCql {
    tenant_id: String,
    day: String,
    created_at_ms: i64,
    feedback_id: String,
    job_id: String,
    ticket_id: String,
    rating: i32,
    helpful: Option<bool>,
    comment: Option<String>,
    technician: Option<String>,
}

/// The outcome of a lightweight transaction: whether it applied, and the
/// row it found when not.
struct Lwt {
    applied: bool,
    existing: HashMap<String, CqlValue>,
}

impl Lwt {
    fn text(&self, column: &str) -> Option<String> {
        self.existing.get(column).and_then(|v| v.as_text()).cloned()
    }
    fn bigint(&self, column: &str) -> Option<i64> {
        self.existing.get(column).and_then(|v| v.as_bigint())
    }
}

fn lwt_of(result: QueryResult) -> Result<Lwt, StoreError> {
    let rows = result.into_rows_result().map_err(corrupt)?;
    let names: Vec<String> = rows.column_specs().iter().map(|c| c.name().to_string()).collect();
    let row: Row = rows.first_row::<Row>().map_err(corrupt)?;
    let mut existing = HashMap::new();
    let mut applied = false;
    for (name, value) in names.into_iter().zip(row.columns) {
        if name == "[applied]" {
            applied = value.as_ref().and_then(|v| v.as_boolean()).unwrap_or(false);
        } else if let Some(v) = value {
            existing.insert(name, v);
        }
    }
    Ok(Lwt { applied, existing })
}

struct Statements {
    sdp_rate_get: PreparedStatement,
    sdp_rate_insert: PreparedStatement,
    sdp_rate_update: PreparedStatement,
    tenant_insert: PreparedStatement,
    tenant_update: PreparedStatement,
    tenant_get: PreparedStatement,
    tenant_list: PreparedStatement,
    tenant_delete: PreparedStatement,
    token_put: PreparedStatement,
    token_get: PreparedStatement,
    token_delete: PreparedStatement,
    history_insert: [PreparedStatement; 4],
    history_by_job: PreparedStatement,
    history_by_ticket: PreparedStatement,
    history_by_correlation: PreparedStatement,
    history_by_day: PreparedStatement,
    history_delete_job: PreparedStatement,
    history_delete_ticket_row: PreparedStatement,
    history_delete_correlation_row: PreparedStatement,
    history_delete_day_row: PreparedStatement,
    history_delete_ticket: PreparedStatement,
    history_delete_correlation: PreparedStatement,
    history_delete_day: PreparedStatement,
    history_day_keys: PreparedStatement,
    day_put: PreparedStatement,
    days_between: PreparedStatement,
    days_all: PreparedStatement,
    days_delete: PreparedStatement,
    feedback_insert: PreparedStatement,
    feedback_by_day: PreparedStatement,
    feedback_delete_day: PreparedStatement,
    note_get: PreparedStatement,
    note_pending: PreparedStatement,
    note_posted_update: PreparedStatement,
    note_posted_insert: PreparedStatement,
    webhook_insert: PreparedStatement,
    webhook_take_over: PreparedStatement,
    /// A claim whose insert-time cells expired while a later update's did not.
    webhook_delete_partial: PreparedStatement,
    webhook_confirm: PreparedStatement,
    webhook_release: PreparedStatement,
    event_insert: PreparedStatement,
    claims_any: [PreparedStatement; 3],
    claims_delete: [PreparedStatement; 3],
}

impl Statements {
    async fn prepare(session: &Session, ks: &str, page_size: u32, timeout: Duration) -> Result<Self, StoreError> {
        // `Session::prepare` has no client timeout of its own (a lost
        // PREPARE would wait forever): bound it with the request timeout.
        let p = |cql: String| async move {
            let mut s = tokio::time::timeout(timeout, session.prepare(cql.clone()))
                .await
                .map_err(|_| StoreError::Unavailable(format!("ScyllaDB prepare timed out after {timeout:?}: {cql}")))?
                .map_err(|e| classify_prepare(&e))?;
            s.set_page_size(page_size.clamp(1, i32::MAX as u32) as i32);
            Ok::<_, StoreError>(s)
        };
        let table_of = [
            "history_by_job",
            "history_by_ticket",
            "history_by_correlation",
            "history_by_day",
        ];
        let mut history_insert = Vec::new();
        for t in table_of {
            history_insert.push(
                p(format!(
                    "INSERT INTO {ks}.{t} ({HISTORY_COLUMNS}) VALUES ({HISTORY_MARKS})"
                ))
                .await?,
            );
        }
        let claims = ["webhook_claims", "event_claims", "note_records"];
        let mut claims_any = Vec::new();
        let mut claims_delete = Vec::new();
        for t in claims {
            claims_any.push(
                p(format!(
                    "SELECT tenant_id FROM {ks}.{t} WHERE tenant_id = ? AND bucket = ? LIMIT 1"
                ))
                .await?,
            );
            claims_delete.push(p(format!("DELETE FROM {ks}.{t} WHERE tenant_id = ? AND bucket = ?")).await?);
        }
        let three = |v: Vec<PreparedStatement>| -> [PreparedStatement; 3] {
            v.try_into().unwrap_or_else(|_| unreachable!("three claims tables"))
        };
        Ok(Statements {
            sdp_rate_get: p(format!("SELECT tat_ms FROM {ks}.sdp_rate_limit WHERE tenant_id = ?")).await?,
            sdp_rate_insert: p(format!("INSERT INTO {ks}.sdp_rate_limit (tenant_id, tat_ms) VALUES (?, ?) IF NOT EXISTS USING TTL {SDP_RATE_TTL_SECS}")).await?,
            sdp_rate_update: p(format!("UPDATE {ks}.sdp_rate_limit USING TTL {SDP_RATE_TTL_SECS} SET tat_ms = ? WHERE tenant_id = ? IF tat_ms = ?")).await?,
            tenant_insert: p(format!("INSERT INTO {ks}.tenants ({TENANT_COLUMNS}) VALUES ({TENANT_MARKS}) IF NOT EXISTS")).await?,
            tenant_update: p(format!("UPDATE {ks}.tenants SET sdp_base_url = :sdp_base_url, sdp_auth = :sdp_auth, sdp_token = :sdp_token, webhook_secret = :webhook_secret, previous_webhook_secret = :previous_webhook_secret, previous_valid_until_ms = :previous_valid_until_ms, api_token_hash = :api_token_hash, requests_per_minute = :requests_per_minute, enabled_events = :enabled_events, suspended = :suspended, created_at_ms = :created_at_ms, updated_at_ms = :updated_at_ms WHERE tenant_id = :tenant_id IF EXISTS")).await?,
            tenant_get: p(format!("SELECT {TENANT_COLUMNS} FROM {ks}.tenants WHERE tenant_id = ?")).await?,
            tenant_list: p(format!("SELECT {TENANT_COLUMNS} FROM {ks}.tenants")).await?,
            tenant_delete: p(format!("DELETE FROM {ks}.tenants WHERE tenant_id = ? IF EXISTS")).await?,
            token_put: p(format!("INSERT INTO {ks}.tenants_by_token (api_token_hash, tenant_id) VALUES (?, ?)")).await?,
            token_get: p(format!("SELECT tenant_id FROM {ks}.tenants_by_token WHERE api_token_hash = ?")).await?,
            token_delete: p(format!("DELETE FROM {ks}.tenants_by_token WHERE api_token_hash = ?")).await?,
            history_insert: history_insert.try_into().unwrap_or_else(|_| unreachable!("four history tables")),
            history_by_job: p(format!("SELECT {HISTORY_COLUMNS} FROM {ks}.history_by_job WHERE tenant_id = ? AND job_id = ?")).await?,
            history_by_ticket: p(format!("SELECT {HISTORY_COLUMNS} FROM {ks}.history_by_ticket WHERE tenant_id = ? AND ticket_id = ?")).await?,
            history_by_correlation: p(format!("SELECT {HISTORY_COLUMNS} FROM {ks}.history_by_correlation WHERE tenant_id = ? AND correlation_id = ?")).await?,
            history_by_day: p(format!("SELECT {HISTORY_COLUMNS} FROM {ks}.history_by_day WHERE tenant_id = ? AND day = ? AND completed_at_ms >= ? AND completed_at_ms < ?")).await?,
            history_delete_job: p(format!("DELETE FROM {ks}.history_by_job WHERE tenant_id = ? AND job_id = ?")).await?,
            history_delete_ticket_row: p(format!("DELETE FROM {ks}.history_by_ticket WHERE tenant_id = ? AND ticket_id = ? AND completed_at_ms = ? AND job_id = ?")).await?,
            history_delete_correlation_row: p(format!("DELETE FROM {ks}.history_by_correlation WHERE tenant_id = ? AND correlation_id = ? AND completed_at_ms = ? AND job_id = ?")).await?,
            history_delete_day_row: p(format!("DELETE FROM {ks}.history_by_day WHERE tenant_id = ? AND day = ? AND completed_at_ms = ? AND job_id = ?")).await?,
            history_delete_ticket: p(format!("DELETE FROM {ks}.history_by_ticket WHERE tenant_id = ? AND ticket_id = ?")).await?,
            history_delete_correlation: p(format!("DELETE FROM {ks}.history_by_correlation WHERE tenant_id = ? AND correlation_id = ?")).await?,
            history_delete_day: p(format!("DELETE FROM {ks}.history_by_day WHERE tenant_id = ? AND day = ?")).await?,
            history_day_keys: p(format!("SELECT job_id, ticket_id, correlation_id FROM {ks}.history_by_day WHERE tenant_id = ? AND day = ?")).await?,
            day_put: p(format!("INSERT INTO {ks}.tenant_days (tenant_id, kind, day) VALUES (?, ?, ?)")).await?,
            days_between: p(format!("SELECT day FROM {ks}.tenant_days WHERE tenant_id = ? AND kind = ? AND day >= ? AND day <= ?")).await?,
            days_all: p(format!("SELECT kind, day FROM {ks}.tenant_days WHERE tenant_id = ?")).await?,
            days_delete: p(format!("DELETE FROM {ks}.tenant_days WHERE tenant_id = ?")).await?,
            feedback_insert: p(format!("INSERT INTO {ks}.feedback_by_day (tenant_id, day, created_at_ms, feedback_id, job_id, ticket_id, rating, helpful, comment, technician) VALUES (:tenant_id, :day, :created_at_ms, :feedback_id, :job_id, :ticket_id, :rating, :helpful, :comment, :technician)")).await?,
            feedback_by_day: p(format!("SELECT tenant_id, day, created_at_ms, feedback_id, job_id, ticket_id, rating, helpful, comment, technician FROM {ks}.feedback_by_day WHERE tenant_id = ? AND day = ? AND created_at_ms >= ? AND created_at_ms < ?")).await?,
            feedback_delete_day: p(format!("DELETE FROM {ks}.feedback_by_day WHERE tenant_id = ? AND day = ?")).await?,
            note_get: p(format!("SELECT state, note_id FROM {ks}.note_records WHERE tenant_id = ? AND bucket = ? AND job_id = ?")).await?,
            note_pending: p(format!("INSERT INTO {ks}.note_records (tenant_id, bucket, job_id, ticket_id, state, updated_at_ms) VALUES (?, ?, ?, ?, 'pending', ?) IF NOT EXISTS USING TTL ?")).await?,
            note_posted_update: p(format!("UPDATE {ks}.note_records USING TTL ? SET state = 'posted', note_id = ?, ticket_id = ?, updated_at_ms = ? WHERE tenant_id = ? AND bucket = ? AND job_id = ? IF EXISTS")).await?,
            note_posted_insert: p(format!("INSERT INTO {ks}.note_records (tenant_id, bucket, job_id, ticket_id, state, note_id, updated_at_ms) VALUES (?, ?, ?, ?, 'posted', ?, ?) IF NOT EXISTS USING TTL ?")).await?,
            webhook_insert: p(format!("INSERT INTO {ks}.webhook_claims (tenant_id, bucket, webhook_id, job_id, correlation_id, state, created_at_ms) VALUES (?, ?, ?, ?, ?, 'pending', ?) IF NOT EXISTS USING TTL ?")).await?,
            webhook_take_over: p(format!("UPDATE {ks}.webhook_claims USING TTL ? SET state = 'pending', created_at_ms = ?, job_id = ?, correlation_id = ? WHERE tenant_id = ? AND bucket = ? AND webhook_id = ? IF state = ? AND created_at_ms = ?")).await?,
            webhook_delete_partial: p(format!("DELETE FROM {ks}.webhook_claims WHERE tenant_id = ? AND bucket = ? AND webhook_id = ? IF job_id = null")).await?,
            webhook_confirm: p(format!("UPDATE {ks}.webhook_claims USING TTL ? SET state = 'accepted' WHERE tenant_id = ? AND bucket = ? AND webhook_id = ? IF EXISTS")).await?,
            webhook_release: p(format!("UPDATE {ks}.webhook_claims USING TTL ? SET state = 'released' WHERE tenant_id = ? AND bucket = ? AND webhook_id = ? IF state = 'pending'")).await?,
            event_insert: p(format!("INSERT INTO {ks}.event_claims (tenant_id, bucket, ticket_id, event, job_id, created_at_ms) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?")).await?,
            claims_any: three(claims_any),
            claims_delete: three(claims_delete),
        })
    }
}

/// The ScyllaDB store.
pub struct ScyllaStore {
    session: Arc<Session>,
    s: Statements,
    search: index::SearchStatements,
    options: StoreOptions,
    keyspace: String,
}

/// The migrations recorded in the keyspace, or `None` when the keyspace
/// (or its migrations table) does not exist yet.
async fn applied_migrations(session: &Session, ks: &str) -> Result<Option<Vec<Applied>>, StoreError> {
    let exists = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'schema_migrations'",
            (ks,),
        )
        .await
        .map_err(|e| classify_execution_error(&e))?
        .into_rows_result()
        .map_err(corrupt)?
        .rows_num()
        > 0;
    if !exists {
        return Ok(None);
    }
    let rows = session
        .query_unpaged(format!("SELECT name, checksum FROM {ks}.schema_migrations"), ())
        .await
        .map_err(|e| classify_execution_error(&e))?
        .into_rows_result()
        .map_err(corrupt)?;
    let mut out = Vec::new();
    for r in rows.rows::<(String, Option<String>)>().map_err(corrupt)? {
        let (name, checksum) = r.map_err(corrupt)?;
        out.push(Applied { name, checksum });
    }
    Ok(Some(out))
}

impl ScyllaStore {
    /// Connects, checks the schema is what this binary expects (`run`
    /// refuses an older one: `ticketflow migrate` first), and prepares every
    /// statement.
    pub async fn connect(config: &ScyllaConfig, options: StoreOptions) -> Result<Self, StoreError> {
        let session = config.connect().await?;
        let ks = &config.keyspace;
        match applied_migrations(&session, ks).await? {
            None => {
                return Err(StoreError::Rejected(format!(
                    "ScyllaDB keyspace {ks} has no Ticketflow schema: run `ticketflow migrate` first"
                )))
            }
            Some(applied) => migrate::require_current(migrate::SCYLLA, &applied, &format!("ScyllaDB keyspace {ks}"))?,
        }
        let s = Statements::prepare(&session, ks, options.page_size, config.request_timeout).await?;
        let search = index::SearchStatements::prepare(&session, ks, options.page_size, config.request_timeout).await?;
        Ok(ScyllaStore {
            session: Arc::new(session),
            s,
            search,
            options,
            keyspace: ks.clone(),
        })
    }

    /// Creates the keyspace (with the configured replication) and applies
    /// every migration not applied yet; returns the names applied now.
    pub async fn migrate(config: &ScyllaConfig) -> Result<Vec<String>, StoreError> {
        let session = config.connect().await?;
        let ks = &config.keyspace;
        let run = |cql: String| {
            let session = &session;
            async move {
                session
                    .query_unpaged(cql, ())
                    .await
                    .map_err(|e| classify_execution_error(&e))
            }
        };
        run(format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}{}",
            config.replication,
            if config.tablets_disabled {
                " AND tablets = {'enabled': false}"
            } else {
                ""
            }
        ))
        .await?;
        run(format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (name text PRIMARY KEY, checksum text, applied_at_ms bigint)"
        ))
        .await?;
        session
            .await_schema_agreement()
            .await
            .map_err(|e| StoreError::Unavailable(format!("ScyllaDB schema agreement: {e}")))?;
        let applied = applied_migrations(&session, ks).await?.unwrap_or_default();
        let todo = migrate::pending(migrate::SCYLLA, &applied)?;
        let mut done = Vec::new();
        for m in todo {
            for stmt in migrate::statements(&m.text.replace("{keyspace}", ks)) {
                run(stmt).await?;
            }
            session
                .await_schema_agreement()
                .await
                .map_err(|e| StoreError::Unavailable(format!("ScyllaDB schema agreement: {e}")))?;
            session
                .query_unpaged(
                    format!("INSERT INTO {ks}.schema_migrations (name, checksum, applied_at_ms) VALUES (?, ?, ?)"),
                    (m.name, m.checksum(), now_ms()),
                )
                .await
                .map_err(|e| classify_execution_error(&e))?;
            done.push(m.name.to_string());
        }
        // Rows recorded before checksums were kept get theirs now.
        for a in applied.iter().filter(|a| a.checksum.is_none()) {
            if let Some(m) = migrate::SCYLLA.iter().find(|m| m.name == a.name) {
                run(format!(
                    "UPDATE {ks}.schema_migrations SET checksum = '{}' WHERE name = '{}'",
                    m.checksum(),
                    m.name
                ))
                .await?;
            }
        }
        Ok(done)
    }

    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    async fn exec(&self, stmt: &PreparedStatement, values: impl SerializeRow) -> Result<QueryResult, StoreError> {
        self.session
            .execute_unpaged(stmt, values)
            .await
            .map_err(|e| classify_execution_error(&e))
    }

    async fn lwt(&self, stmt: &PreparedStatement, values: impl SerializeRow) -> Result<Lwt, StoreError> {
        lwt_of(self.exec(stmt, values).await?)
    }

    /// Every row of a paged query (up to `limit`), page by page.
    async fn select<R>(
        &self,
        stmt: &PreparedStatement,
        values: impl SerializeRow,
        limit: Option<usize>,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let pager = self
            .session
            .execute_iter(stmt.clone(), values)
            .await
            .map_err(|e| classify_pager(&e))?;
        let mut rows = pager.rows_stream::<R>().map_err(corrupt)?;
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(|e| classify_next_row(&e))? {
            out.push(row);
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    fn tenant_cql(&self, t: &Tenant) -> Result<TenantCql, StoreError> {
        let sealed = seal_tenant_secrets(&self.options.sealer, t)?;
        Ok(TenantCql {
            tenant_id: t.tenant_id.clone(),
            sdp_base_url: t.sdp.base_url.clone(),
            sdp_auth: t.sdp.auth.as_str().to_string(),
            sdp_token: sealed.sdp_token,
            webhook_secret: sealed.webhook_secret,
            previous_webhook_secret: sealed.previous_webhook_secret,
            previous_valid_until_ms: t.webhook_secrets.previous_valid_until_ms,
            api_token_hash: t.api_token_hash.clone(),
            requests_per_minute: t.requests_per_minute.min(i32::MAX as u32) as i32,
            enabled_events: t.enabled_events.clone(),
            suspended: t.suspended.clone(),
            created_at_ms: t.created_at_ms,
            updated_at_ms: now_ms(),
        })
    }

    fn tenant_of(&self, c: TenantCql) -> Result<Tenant, StoreError> {
        let auth: SdpAuth = c.sdp_auth.parse().map_err(StoreError::Corrupt)?;
        let secrets = open_tenant_secrets(
            &self.options.sealer,
            &c.tenant_id,
            &c.sdp_token,
            &c.webhook_secret,
            c.previous_webhook_secret.as_deref(),
        )?;
        let (token, oauth) = sdp_credentials(auth, secrets.sdp_token)?;
        Ok(Tenant {
            sdp: SdpTenant {
                base_url: c.sdp_base_url,
                auth,
                token,
                oauth,
            },
            webhook_secrets: WebhookSecrets {
                current: secrets.webhook_secret,
                previous: secrets.previous_webhook_secret,
                previous_valid_until_ms: c.previous_valid_until_ms,
            },
            api_token_hash: c.api_token_hash,
            requests_per_minute: c.requests_per_minute.max(0) as u32,
            enabled_events: c.enabled_events,
            suspended: c.suspended,
            created_at_ms: c.created_at_ms,
            tenant_id: c.tenant_id,
        })
    }

    /// The days (newest first) of `kind` rows between two instants.
    async fn days(&self, tenant_id: &str, kind: &str, from_ms: i64, until_ms: i64) -> Result<Vec<String>, StoreError> {
        if until_ms <= from_ms {
            return Ok(Vec::new());
        }
        let first = day_of(from_ms);
        let last = day_of(until_ms - 1);
        let rows: Vec<(String,)> = self
            .select(&self.s.days_between, (tenant_id, kind, first, last), Some(MAX_DAYS))
            .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// Runs one statement for each of `values`, 32 at a time.
    async fn exec_all<V: SerializeRow + Send + Sync>(
        &self,
        stmt: &PreparedStatement,
        values: &[V],
    ) -> Result<(), StoreError> {
        for chunk in values.chunks(32) {
            let mut running = Vec::with_capacity(chunk.len());
            for v in chunk {
                running.push(self.exec(stmt, v));
            }
            futures::future::try_join_all(running).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl TenantStore for ScyllaStore {
    async fn create_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let row = self.tenant_cql(t)?;
        // The token index first: a tenant row is never visible without it.
        self.exec(&self.s.token_put, (&row.api_token_hash, &row.tenant_id))
            .await?;
        let outcome = self.lwt(&self.s.tenant_insert, &row).await?;
        if !outcome.applied {
            // The existing tenant keeps its own token; ours must not point at it.
            if outcome.text("api_token_hash").as_deref() != Some(row.api_token_hash.as_str()) {
                self.exec(&self.s.token_delete, (&row.api_token_hash,)).await?;
            }
            return Err(StoreError::TenantExists(t.tenant_id.clone()));
        }
        Ok(())
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let row = self.tenant_cql(t)?;
        let before: Vec<TenantCql> = self.select(&self.s.tenant_get, (&row.tenant_id,), Some(1)).await?;
        let Some(before) = before.into_iter().next() else {
            return Err(StoreError::NoSuchTenant(t.tenant_id.clone()));
        };
        let token_changed = before.api_token_hash != row.api_token_hash;
        if token_changed {
            self.exec(&self.s.token_put, (&row.api_token_hash, &row.tenant_id))
                .await?;
        }
        if !self.lwt(&self.s.tenant_update, &row).await?.applied {
            return Err(StoreError::NoSuchTenant(t.tenant_id.clone()));
        }
        if token_changed {
            self.exec(&self.s.token_delete, (&before.api_token_hash,)).await?;
        }
        Ok(())
    }

    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError> {
        let rows: Vec<TenantCql> = self.select(&self.s.tenant_get, (tenant_id,), Some(1)).await?;
        rows.into_iter().next().map(|r| self.tenant_of(r)).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantCql> = self.select(&self.s.tenant_list, (), None).await?;
        let mut out = rows
            .into_iter()
            .map(|r| self.tenant_of(r))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(out)
    }

    async fn remove_tenant(&self, tenant_id: &str, purge: bool) -> Result<bool, StoreError> {
        let rows: Vec<TenantCql> = self.select(&self.s.tenant_get, (tenant_id,), Some(1)).await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(false);
        };
        if purge {
            self.purge(tenant_id).await?;
        } else if self.tenant_has_data(tenant_id).await? {
            return Err(StoreError::TenantHasData(tenant_id.to_string()));
        }
        self.exec(&self.s.token_delete, (&row.api_token_hash,)).await?;
        self.lwt(&self.s.tenant_delete, (tenant_id,)).await?;
        Ok(true)
    }

    async fn tenant_by_api_token_hash(&self, hash: &str) -> Result<Option<Tenant>, StoreError> {
        let rows: Vec<(Option<String>,)> = self.select(&self.s.token_get, (hash,), Some(1)).await?;
        let Some((Some(tenant_id),)) = rows.into_iter().next() else {
            return Ok(None);
        };
        // The index may be stale (a token rotated while a write failed
        // half-way): the tenant row is the truth.
        Ok(self
            .get_tenant(&tenant_id)
            .await?
            .filter(|t| crate::secrets::constant_time_eq(t.api_token_hash.as_bytes(), hash.as_bytes())))
    }

    async fn tenant_has_data(&self, tenant_id: &str) -> Result<bool, StoreError> {
        let days: Vec<(String, String)> = self.select(&self.s.days_all, (tenant_id,), Some(1)).await?;
        if !days.is_empty() || self.search_has_data(tenant_id).await? {
            return Ok(true);
        }
        for stmt in &self.s.claims_any {
            for chunk in (0..CLAIM_BUCKETS).collect::<Vec<_>>().chunks(32) {
                let mut running = Vec::with_capacity(chunk.len());
                for b in chunk {
                    running.push(self.select::<(String,)>(stmt, (tenant_id, *b), Some(1)));
                }
                if futures::future::try_join_all(running)
                    .await?
                    .iter()
                    .any(|r| !r.is_empty())
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

impl ScyllaStore {
    /// Deletes every history, feedback and claim partition of a tenant.
    async fn purge(&self, tenant_id: &str) -> Result<(), StoreError> {
        let days: Vec<(String, String)> = self.select(&self.s.days_all, (tenant_id,), None).await?;
        for (kind, day) in &days {
            if kind == "history" {
                let keys: Vec<(String, String, String)> =
                    self.select(&self.s.history_day_keys, (tenant_id, day), None).await?;
                let tenant = tenant_id.to_string();
                let jobs: Vec<(String, String)> = keys.iter().map(|(j, _, _)| (tenant.clone(), j.clone())).collect();
                self.exec_all(&self.s.history_delete_job, &jobs).await?;
                let mut tickets: Vec<(String, String)> =
                    keys.iter().map(|(_, t, _)| (tenant.clone(), t.clone())).collect();
                tickets.sort_unstable();
                tickets.dedup();
                self.exec_all(&self.s.history_delete_ticket, &tickets).await?;
                let mut corrs: Vec<(String, String)> =
                    keys.iter().map(|(_, _, c)| (tenant.clone(), c.clone())).collect();
                corrs.sort_unstable();
                corrs.dedup();
                self.exec_all(&self.s.history_delete_correlation, &corrs).await?;
                self.exec(&self.s.history_delete_day, (tenant_id, day)).await?;
            } else {
                self.exec(&self.s.feedback_delete_day, (tenant_id, day)).await?;
            }
        }
        let buckets: Vec<(String, i32)> = (0..CLAIM_BUCKETS).map(|b| (tenant_id.to_string(), b)).collect();
        for stmt in &self.s.claims_delete {
            self.exec_all(stmt, &buckets).await?;
        }
        self.exec(&self.s.days_delete, (tenant_id,)).await?;
        self.purge_search(tenant_id).await?;
        Ok(())
    }

    fn note_key<'a>(tenant_id: &'a str, job_id: &'a str) -> (&'a str, i32, &'a str) {
        (tenant_id, bucket_of(job_id), job_id)
    }
}

#[async_trait]
impl HistoryStore for ScyllaStore {
    async fn put_history(&self, r: &HistoryRow) -> Result<(), StoreError> {
        let row = HistoryCql::from(r);
        // A job's row is replaced: its old entries in the clustered tables
        // are keyed by the old completion time.
        let old: Option<HistoryCql> = self
            .select(&self.s.history_by_job, (&r.tenant_id, &r.job_id), Some(1))
            .await?
            .pop();
        // Client timestamps: the old rows' tombstones one microsecond
        // before the new rows, so a delete never shadows an insert of the
        // same key (in one batch both would share a timestamp, and the
        // tombstone would win).
        let ts = now_ms() * 1000;
        if let Some(o) = old {
            let mut deletes = Batch::new(BatchType::Logged);
            let mut keys: Vec<(&str, &str, i64, &str)> = Vec::new();
            if o.ticket_id != row.ticket_id || o.completed_at_ms != row.completed_at_ms {
                deletes.append_statement(self.s.history_delete_ticket_row.clone());
                keys.push((&o.tenant_id, &o.ticket_id, o.completed_at_ms, &o.job_id));
            }
            if o.correlation_id != row.correlation_id || o.completed_at_ms != row.completed_at_ms {
                deletes.append_statement(self.s.history_delete_correlation_row.clone());
                keys.push((&o.tenant_id, &o.correlation_id, o.completed_at_ms, &o.job_id));
            }
            if o.day != row.day || o.completed_at_ms != row.completed_at_ms {
                deletes.append_statement(self.s.history_delete_day_row.clone());
                keys.push((&o.tenant_id, &o.day, o.completed_at_ms, &o.job_id));
            }
            if !keys.is_empty() {
                deletes.set_timestamp(Some(ts - 1));
                self.session
                    .batch(&deletes, keys)
                    .await
                    .map_err(|e| classify_execution_error(&e))?;
            }
        }
        let mut batch = Batch::new(BatchType::Logged);
        for stmt in &self.s.history_insert {
            batch.append_statement(stmt.clone());
        }
        batch.append_statement(self.s.day_put.clone());
        batch.set_timestamp(Some(ts));
        let day = (r.tenant_id.as_str(), "history", row.day.as_str());
        self.session
            .batch(&batch, (&row, &row, &row, &row, day))
            .await
            .map_err(|e| classify_execution_error(&e))?;
        Ok(())
    }

    async fn history_by_job(&self, tenant_id: &str, job_id: &str) -> Result<Option<HistoryRow>, StoreError> {
        let rows: Vec<HistoryCql> = self
            .select(&self.s.history_by_job, (tenant_id, job_id), Some(1))
            .await?;
        rows.into_iter().next().map(HistoryRow::try_from).transpose()
    }

    async fn history_by_ticket(&self, tenant_id: &str, ticket_id: &str) -> Result<Vec<HistoryRow>, StoreError> {
        let rows: Vec<HistoryCql> = self
            .select(&self.s.history_by_ticket, (tenant_id, ticket_id), None)
            .await?;
        rows.into_iter().map(HistoryRow::try_from).collect()
    }

    async fn history_by_correlation(
        &self,
        tenant_id: &str,
        correlation_id: &str,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let rows: Vec<HistoryCql> = self
            .select(&self.s.history_by_correlation, (tenant_id, correlation_id), None)
            .await?;
        rows.into_iter().map(HistoryRow::try_from).collect()
    }

    async fn history_between(
        &self,
        tenant_id: &str,
        from_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let mut out = Vec::new();
        for day in self.days(tenant_id, "history", from_ms, until_ms).await? {
            let left = limit as usize - out.len();
            if left == 0 {
                break;
            }
            let rows: Vec<HistoryCql> = self
                .select(&self.s.history_by_day, (tenant_id, &day, from_ms, until_ms), Some(left))
                .await?;
            for r in rows {
                out.push(HistoryRow::try_from(r)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl FeedbackStore for ScyllaStore {
    async fn add_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        let day = day_of(f.created_at_ms);
        let row = FeedbackCql {
            tenant_id: f.tenant_id.clone(),
            day: day.clone(),
            created_at_ms: f.created_at_ms,
            feedback_id: f.feedback_id.clone(),
            job_id: f.job_id.clone(),
            ticket_id: f.ticket_id.clone(),
            rating: i32::from(f.rating),
            helpful: f.helpful,
            comment: f.comment.clone(),
            technician: f.technician.clone(),
        };
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(self.s.feedback_insert.clone());
        batch.append_statement(self.s.day_put.clone());
        self.session
            .batch(&batch, (&row, (f.tenant_id.as_str(), "feedback", day.as_str())))
            .await
            .map_err(|e| classify_execution_error(&e))?;
        Ok(())
    }

    async fn list_feedback(&self, tenant_id: &str, from_ms: i64, until_ms: i64) -> Result<Vec<Feedback>, StoreError> {
        let mut days = self.days(tenant_id, "feedback", from_ms, until_ms).await?;
        days.reverse();
        let mut out = Vec::new();
        for day in days {
            let rows: Vec<FeedbackCql> = self
                .select(&self.s.feedback_by_day, (tenant_id, &day, from_ms, until_ms), None)
                .await?;
            for r in rows {
                out.push(Feedback {
                    feedback_id: r.feedback_id,
                    tenant_id: r.tenant_id,
                    job_id: r.job_id,
                    ticket_id: r.ticket_id,
                    rating: u8::try_from(r.rating).map_err(|_| StoreError::Corrupt(format!("rating {}", r.rating)))?,
                    helpful: r.helpful,
                    comment: r.comment,
                    technician: r.technician,
                    created_at_ms: r.created_at_ms,
                });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl IdempotencyStore for ScyllaStore {
    async fn note_state(&self, tenant_id: &str, job_id: &str) -> Result<Option<NoteState>, StoreError> {
        let key = Self::note_key(tenant_id, job_id);
        let rows: Vec<(Option<String>, Option<String>)> = self.select(&self.s.note_get, key, Some(1)).await?;
        Ok(rows.into_iter().next().map(|(state, note_id)| match state.as_deref() {
            Some("posted") => NoteState::Posted {
                note_id: note_id.unwrap_or_default(),
            },
            _ => NoteState::Pending,
        }))
    }

    async fn note_pending(&self, tenant_id: &str, job_id: &str, ticket_id: &str) -> Result<(), StoreError> {
        let ttl = ttl_secs(self.options.retention.note_records);
        self.lwt(
            &self.s.note_pending,
            (tenant_id, bucket_of(job_id), job_id, ticket_id, now_ms(), ttl),
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
        let ttl = ttl_secs(self.options.retention.note_records);
        let b = bucket_of(job_id);
        let now = now_ms();
        let updated = self
            .lwt(
                &self.s.note_posted_update,
                (ttl, note_id, ticket_id, now, tenant_id, b, job_id),
            )
            .await?;
        if !updated.applied {
            let inserted = self
                .lwt(
                    &self.s.note_posted_insert,
                    (tenant_id, b, job_id, ticket_id, note_id, now, ttl),
                )
                .await?;
            if !inserted.applied {
                // Written between our two statements (a pending record):
                // the update now finds it.
                self.lwt(
                    &self.s.note_posted_update,
                    (ttl, note_id, ticket_id, now, tenant_id, b, job_id),
                )
                .await?;
            }
        }
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
        let ttl = ttl_secs(self.options.retention.webhook_claims);
        let b = bucket_of(webhook_id);
        let now = now_ms();
        let first = self
            .lwt(
                &self.s.webhook_insert,
                (tenant_id, b, webhook_id, job_id, correlation_id, now, ttl),
            )
            .await?;
        let proceed = |j: String, c: String| WebhookClaim::Proceed {
            job_id: j,
            correlation_id: c,
        };
        if first.applied {
            return Ok(proceed(job_id.to_string(), correlation_id.to_string()));
        }
        let mut first = first;
        if first.text("job_id").is_none() {
            // Only cells of a later update are left (the insert's expired
            // first: `USING TTL` covers the cells a statement writes): the
            // claim is past its retention. Delete what is left, claim anew.
            self.lwt(&self.s.webhook_delete_partial, (tenant_id, b, webhook_id))
                .await?;
            first = self
                .lwt(
                    &self.s.webhook_insert,
                    (tenant_id, b, webhook_id, job_id, correlation_id, now, ttl),
                )
                .await?;
            if first.applied {
                return Ok(proceed(job_id.to_string(), correlation_id.to_string()));
            }
        }
        let (Some(first_job), Some(first_corr), Some(state), Some(created)) = (
            first.text("job_id"),
            first.text("correlation_id"),
            first.text("state"),
            first.bigint("created_at_ms"),
        ) else {
            // Raced with another partial-row clean-up: answer as in flight.
            return Ok(WebhookClaim::InFlight);
        };
        if state == "accepted" {
            return Ok(WebhookClaim::Accepted {
                job_id: first_job,
                correlation_id: first_corr,
            });
        }
        if state == "pending" && first_job == job_id {
            // Our own insert, applied although its answer was lost (a
            // write timeout retried): the claim is ours.
            return Ok(proceed(first_job, first_corr));
        }
        if state == "released" || now - created > stale_after_ms {
            let taken = self
                .lwt(
                    &self.s.webhook_take_over,
                    (
                        ttl,
                        now,
                        &first_job,
                        &first_corr,
                        tenant_id,
                        b,
                        webhook_id,
                        state.as_str(),
                        created,
                    ),
                )
                .await?;
            if taken.applied {
                return Ok(proceed(first_job, first_corr));
            }
        }
        Ok(WebhookClaim::InFlight)
    }

    async fn confirm_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        let ttl = ttl_secs(self.options.retention.webhook_claims);
        self.lwt(
            &self.s.webhook_confirm,
            (ttl, tenant_id, bucket_of(webhook_id), webhook_id),
        )
        .await?;
        Ok(())
    }

    async fn release_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError> {
        let ttl = ttl_secs(self.options.retention.webhook_claims);
        self.lwt(
            &self.s.webhook_release,
            (ttl, tenant_id, bucket_of(webhook_id), webhook_id),
        )
        .await?;
        Ok(())
    }

    async fn claim_event(
        &self,
        tenant_id: &str,
        ticket_id: &str,
        event: &str,
        job_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let ttl = ttl_secs(self.options.retention.event_claims);
        let outcome = self
            .lwt(
                &self.s.event_insert,
                (tenant_id, bucket_of(ticket_id), ticket_id, event, job_id, now_ms(), ttl),
            )
            .await?;
        if outcome.applied {
            return Ok(None);
        }
        let first = outcome
            .text("job_id")
            .ok_or_else(|| StoreError::Corrupt(format!("event claim of ticket {ticket_id} lacks job_id")))?;
        Ok((first != job_id).then_some(first))
    }
}

/// A tenant's shared SDP rate-limit row outlives any wait it encodes by far;
/// it expires once the tenant makes no SDP call for a day.
const SDP_RATE_TTL_SECS: u32 = 86_400;

#[async_trait]
impl super::SdpRateStore for ScyllaStore {
    async fn sdp_rate_tat(&self, tenant_id: &str) -> Result<Option<i64>, StoreError> {
        let rows: Vec<(Option<i64>,)> = self.select(&self.s.sdp_rate_get, (tenant_id,), Some(1)).await?;
        Ok(rows.into_iter().next().and_then(|(t,)| t))
    }

    async fn swap_sdp_rate_tat(&self, tenant_id: &str, expected: Option<i64>, new: i64) -> Result<bool, StoreError> {
        let outcome = match expected {
            None => self.lwt(&self.s.sdp_rate_insert, (tenant_id, new)).await?,
            Some(old) => self.lwt(&self.s.sdp_rate_update, (new, tenant_id, old)).await?,
        };
        Ok(outcome.applied)
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.session
            .query_unpaged("SELECT key FROM system.local", ())
            .await
            .map_err(|e| classify_execution_error(&e))?;
        Ok(())
    }
}
