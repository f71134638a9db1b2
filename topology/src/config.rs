//! Configuration from the environment (ARCHITECTURE §6), 12-factor style.
//! `TICKETFLOW_CONFIG` may name a file of `KEY=VALUE` lines that adds to it;
//! variables set in the environment win over the file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sinks::Secret;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Every setting, with its default in one place.
#[derive(Debug, Clone)]
pub struct Config {
    /// `KAFKA_BROKERS`; `None` runs the embedded broker.
    pub kafka_brokers: Option<String>,
    /// `SCYLLA_NODES` (with the other `SCYLLA_*` settings); `None` uses the
    /// embedded store.
    pub scylla: Option<sinks::store::ScyllaConfig>,
    /// Both stores' options: `TICKETFLOW_MASTER_KEY` (or
    /// `TICKETFLOW_MASTER_KEY_FILE`) seals tenants' secrets at rest.
    pub store_options: sinks::store::StoreOptions,
    /// `TICKETFLOW_DATA_DIR` (default `./data`): embedded broker and store.
    pub data_dir: PathBuf,
    /// `TICKETFLOW_BROKER_ADDR` (default `127.0.0.1:9092`).
    pub broker_addr: SocketAddr,
    /// `TICKETFLOW_HTTP_ADDR` (default `127.0.0.1:8080`).
    pub http_addr: SocketAddr,
    /// `TICKETFLOW_ADMIN_TOKEN`; admin endpoints are off without it.
    pub admin_token: Option<Secret>,
    /// `TICKETFLOW_VIEWER_TOKEN`: read-only access to `/dashboard`,
    /// `GET /api/v1/lag` and `GET /api/v1/dlq` (the admin token works too).
    pub viewer_token: Option<Secret>,
    /// `TICKETFLOW_OPS_ADDR`: where a process that does not run ingest
    /// serves `/health`, `/health/ready`, `/metrics`, `/api/v1/lag` and
    /// `/dashboard`. Unset: [`DEFAULT_OPS_ADDR`], or a free port on
    /// 127.0.0.1 when that is taken (logged).
    pub ops_addr: Option<SocketAddr>,
    /// `TICKETFLOW_LAG_MONITOR` (`auto`): which groups this process watches.
    pub lag_monitor: crate::lag::MonitorScope,
    /// `TICKETFLOW_LAG_INTERVAL` (10s), `TICKETFLOW_LAG_WINDOW` (2m),
    /// `TICKETFLOW_LAG_SCAN_RECORDS` (10000).
    pub lag: crate::lag::LagSettings,
    /// `LLM_BASE_URL` (default OpenRouter).
    pub llm_base_url: String,
    /// `LLM_API_KEY`.
    pub llm_api_key: Option<Secret>,
    /// `LLM_MODEL`: the first of [`Config::llm_models`].
    pub llm_model: String,
    /// `LLM_MODELS` (comma-separated, in order of preference), else
    /// `LLM_MODEL` alone: sent as OpenRouter's `models` fallback list, or
    /// tried in turn with other providers.
    pub llm_models: Vec<String>,
    /// `LLM_TIMEOUT_MS` (60000): longest LLM request; a timeout is retried
    /// through the retry tiers.
    pub llm_timeout: Duration,
    /// `LLM_MAX_PROMPT_TOKENS` (6000): the prompt (estimated at a token per
    /// three bytes) is cut to fit.
    pub llm_max_prompt_tokens: usize,
    /// `DISABLE_LLM_SYNTHESIS`.
    pub disable_llm: bool,
    /// `CONTEXT_TIMEOUT_MS` (30000).
    pub context_timeout: Duration,
    /// `SDP_TIMEOUT_MS` (20000): longest ServiceDesk Plus API request (and
    /// Zoho OAuth token request), connection included.
    pub sdp_timeout: Duration,
    /// `PRODUCE_TIMEOUT_MS` (10000): longest wait for the broker to
    /// acknowledge a record (a webhook is answered `503` after it; a stage
    /// output is retried).
    pub produce_timeout: Duration,
    /// `WEBHOOK_SIGNATURE_TOLERANCE_S` (300): how far a `webhook-timestamp`
    /// may be from now.
    pub webhook_signature_tolerance: Duration,
    /// `TICKETFLOW_RETRY_TIERS` (`10s,60s,600s`).
    pub retry_tiers: Vec<Duration>,
    /// `CIRCUIT_BREAKER_THRESHOLD` (5).
    pub breaker_threshold: u32,
    /// `CIRCUIT_BREAKER_TIMEOUT_MS` (60000).
    pub breaker_timeout: Duration,
    /// `TICKETFLOW_TOPIC_PREFIX` (`ticketflow`).
    pub topic_prefix: String,
    /// `TICKETFLOW_PARTITIONS` (6): partitions of every topic created.
    pub partitions: i32,
    /// `TICKETFLOW_MAX_BODY_BYTES` (1 MiB).
    pub max_body_bytes: usize,
    /// `TICKETFLOW_TENANT_RATE` (1000): webhooks per second per tenant.
    pub tenant_rate_per_sec: f64,
    /// The per-source budget of failed authentication:
    /// `TICKETFLOW_AUTH_FAILURES_PER_MINUTE` (600; 0 turns it off),
    /// `TICKETFLOW_AUTH_FAILURE_BURST` (600), `TICKETFLOW_AUTH_FAILURE_SOURCES`
    /// (65536 sources tracked), `TICKETFLOW_TRUSTED_PROXIES` (none).
    pub source_limits: ingest::sources::SourceLimits,
    /// `TICKETFLOW_UNKNOWN_TENANT_CACHE_BYTES` (4 MiB): memory the cache of
    /// unknown tenant ids may hold.
    pub unknown_tenant_cache_bytes: u64,
    /// `SCHEMA_REGISTRY_URL`.
    pub schema_registry_url: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// `TICKETFLOW_DRAIN_TIMEOUT_MS` (20000): bound on draining at shutdown and revoke.
    pub drain_timeout: Duration,
    /// `TICKETFLOW_MAX_IN_FLIGHT_<STAGE>`: per-stage in-flight bounds.
    pub max_in_flight: HashMap<String, usize>,
    /// `TICKETFLOW_STAGE_MEMORY_MB` (64): per-stage budget of payload bytes
    /// held by in-flight records.
    pub stage_memory_bytes: usize,
    /// `TICKETFLOW_RATE_LIMIT_MAX_WAIT_MS` (2000): the longest a record
    /// waits in place for its tenant's SDP rate limit; beyond it the record
    /// is deferred to a retry tier without using an attempt.
    pub rate_limit_max_wait: Duration,
    /// Client security and pass-through librdkafka properties
    /// (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`,
    /// `KAFKA_PROPERTIES`).
    pub kafka_client: crate::kafka::ClientSecurity,
    /// How `topics create` (and `run`) make topics.
    pub topics: crate::kafka::TopicSettings,
    /// `TICKETFLOW_BROKER_STORAGE`: a nisshi storage URL for the embedded
    /// broker instead of the SQLite file under the data dir.
    pub broker_storage: Option<url::Url>,
    /// `TICKETFLOW_BROKER_AUTH=scram`: the embedded broker requires SASL
    /// SCRAM; the user of `KAFKA_SASL_USERNAME`/`KAFKA_SASL_PASSWORD` is
    /// created in it at start.
    pub broker_auth: bool,
}

/// A timeout in milliseconds that must be above zero (a zero timeout would
/// fail every call).
fn positive_ms(name: &str, ms: u64) -> Result<Duration, ConfigError> {
    if ms == 0 {
        return Err(ConfigError(format!("{name} must be at least 1 (milliseconds)")));
    }
    Ok(Duration::from_millis(ms))
}

/// Where a process without ingest serves its ops endpoints by default.
pub const DEFAULT_OPS_ADDR: &str = "127.0.0.1:8081";

/// Parses `10s`, `250ms`, `2m`, `1h`, or plain milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "ms"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (like 10s, 250ms, 2m)"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => return Err(format!("unknown duration unit '{other}' in '{s}' (use ms, s, m, h)")),
    })
}

/// Default in-flight bound per stage. Every record waits for the broker's
/// acknowledgement of its output, so a stage's rate is at most its bound
/// over (work + acknowledgement): the acknowledgement alone took a few
/// hundred milliseconds on a loaded 2-core machine, which held validate at
/// 64 to ~150 records/s. Synthesize waits on the LLM (bound / LLM latency
/// is the pipeline's ceiling); update calls each tenant's rate-limited SDP.
pub fn default_max_in_flight(stage: &str) -> usize {
    match stage {
        "synthesize" => 1024,
        "validate" => 512,
        "context" | "record" => 256,
        "update" => 128,
        _ => 64,
    }
}

impl Config {
    /// Reads the process environment (and `TICKETFLOW_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut vars: HashMap<String, String> = HashMap::new();
        if let Ok(path) = std::env::var("TICKETFLOW_CONFIG") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError(format!("cannot read TICKETFLOW_CONFIG {path}: {e}")))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| ConfigError(format!("{path}:{}: expected KEY=VALUE", n + 1)))?;
                vars.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
            }
        }
        vars.extend(std::env::vars());
        Self::from_map(&vars)
    }

    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let parse_addr = |k: &str, default: &str| -> Result<SocketAddr, ConfigError> {
            let v = get(k).unwrap_or_else(|| default.to_string());
            v.parse()
                .map_err(|_| ConfigError(format!("{k}='{v}' is not an address like 127.0.0.1:8080")))
        };
        let parse_num = |k: &str, default: u64| -> Result<u64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| ConfigError(format!("{k}='{v}' is not a non-negative integer"))),
            }
        };
        let bool_of = |k: &str| -> Result<bool, ConfigError> {
            match get(k).as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("false") | Some("0") | Some("no") => Ok(false),
                Some("true") | Some("1") | Some("yes") => Ok(true),
                Some(v) => Err(ConfigError(format!("{k}='{v}' is not true or false"))),
            }
        };
        let retry_tiers = get("TICKETFLOW_RETRY_TIERS")
            .unwrap_or_else(|| "10s,60s,600s".into())
            .split(',')
            .map(|t| parse_duration(t).map_err(|e| ConfigError(format!("TICKETFLOW_RETRY_TIERS: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if retry_tiers.is_empty() || retry_tiers.len() > 10 {
            return Err(ConfigError("TICKETFLOW_RETRY_TIERS must list 1 to 10 delays".into()));
        }
        let partitions = parse_num("TICKETFLOW_PARTITIONS", 6)?;
        if !(1..=1000).contains(&partitions) {
            return Err(ConfigError("TICKETFLOW_PARTITIONS must be between 1 and 1000".into()));
        }
        let prefix = get("TICKETFLOW_TOPIC_PREFIX").unwrap_or_else(|| "ticketflow".into());
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(ConfigError(format!(
                "TICKETFLOW_TOPIC_PREFIX='{prefix}' may hold only letters, digits, '.', '_' and '-'"
            )));
        }
        let mut max_in_flight = HashMap::new();
        for stage in ["validate", "context", "synthesize", "update", "record"] {
            let k = format!("TICKETFLOW_MAX_IN_FLIGHT_{}", stage.to_uppercase());
            let n = parse_num(&k, default_max_in_flight(stage) as u64)?;
            if n == 0 {
                return Err(ConfigError(format!("{k} must be at least 1")));
            }
            max_in_flight.insert(stage.to_string(), n as usize);
        }
        let tenant_rate = match get("TICKETFLOW_TENANT_RATE") {
            None => 1000.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0)
                .ok_or_else(|| ConfigError(format!("TICKETFLOW_TENANT_RATE='{v}' is not a positive number")))?,
        };
        let llm_base_url = get("LLM_BASE_URL").unwrap_or_else(|| "https://openrouter.ai/api/v1".into());
        if !(llm_base_url.starts_with("http://") || llm_base_url.starts_with("https://")) {
            return Err(ConfigError(format!(
                "LLM_BASE_URL='{llm_base_url}' must be an http(s) URL"
            )));
        }
        let llm_models: Vec<String> = match get("LLM_MODELS") {
            Some(list) => {
                let models: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect();
                if models.is_empty() || models.iter().any(|m| m.contains(char::is_whitespace)) {
                    return Err(ConfigError(format!(
                        "LLM_MODELS='{list}' must list model ids separated by commas, like openai/gpt-4o-mini,anthropic/claude-3.5-haiku"
                    )));
                }
                models
            }
            None => vec![get("LLM_MODEL").unwrap_or_else(|| "openai/gpt-4o-mini".into())],
        };
        let llm_timeout = Duration::from_millis(parse_num("LLM_TIMEOUT_MS", 60_000)?);
        if llm_timeout.is_zero() {
            return Err(ConfigError("LLM_TIMEOUT_MS must be at least 1".into()));
        }
        let llm_max_prompt_tokens = parse_num("LLM_MAX_PROMPT_TOKENS", 6000)? as usize;
        if llm_max_prompt_tokens < 500 {
            return Err(ConfigError(format!(
                "LLM_MAX_PROMPT_TOKENS={llm_max_prompt_tokens} is too small for a useful prompt (at least 500)"
            )));
        }
        let source_limits = {
            let defaults = ingest::sources::SourceLimits::default();
            let burst = parse_num("TICKETFLOW_AUTH_FAILURE_BURST", u64::from(defaults.burst))?;
            let sources = parse_num("TICKETFLOW_AUTH_FAILURE_SOURCES", defaults.max_sources)?;
            if burst == 0 || burst > u64::from(u32::MAX) {
                return Err(ConfigError("TICKETFLOW_AUTH_FAILURE_BURST must be at least 1".into()));
            }
            if sources == 0 {
                return Err(ConfigError("TICKETFLOW_AUTH_FAILURE_SOURCES must be at least 1".into()));
            }
            ingest::sources::SourceLimits {
                failures_per_minute: u32::try_from(parse_num(
                    "TICKETFLOW_AUTH_FAILURES_PER_MINUTE",
                    u64::from(defaults.failures_per_minute),
                )?)
                .map_err(|_| ConfigError("TICKETFLOW_AUTH_FAILURES_PER_MINUTE is too large".into()))?,
                burst: burst as u32,
                max_sources: sources,
                trusted_proxies: get("TICKETFLOW_TRUSTED_PROXIES")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| {
                        p.parse()
                            .map_err(|e| ConfigError(format!("TICKETFLOW_TRUSTED_PROXIES: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            }
        };
        let unknown_tenant_cache_bytes = parse_num(
            "TICKETFLOW_UNKNOWN_TENANT_CACHE_BYTES",
            sinks::store::DEFAULT_NEGATIVE_CACHE_BYTES,
        )?;
        if unknown_tenant_cache_bytes < 4096 {
            return Err(ConfigError(
                "TICKETFLOW_UNKNOWN_TENANT_CACHE_BYTES must be at least 4096".into(),
            ));
        }
        let max_body_bytes = parse_num("TICKETFLOW_MAX_BODY_BYTES", 1024 * 1024)? as usize;
        if max_body_bytes < 1024 {
            return Err(ConfigError("TICKETFLOW_MAX_BODY_BYTES must be at least 1024".into()));
        }
        let kafka_client = crate::kafka::ClientSecurity::from_vars(&get).map_err(ConfigError)?;
        let topics = crate::kafka::TopicSettings::from_vars(&get, max_body_bytes).map_err(ConfigError)?;
        let broker_storage = match get("TICKETFLOW_BROKER_STORAGE") {
            None => None,
            Some(v) => Some(url::Url::parse(&v).map_err(|e| {
                ConfigError(format!(
                    "TICKETFLOW_BROKER_STORAGE='{v}' is not a URL like sqlite:///var/lib/ticketflow/broker.db: {e}"
                ))
            })?),
        };
        let broker_auth = match get("TICKETFLOW_BROKER_AUTH").as_deref() {
            None | Some("none") => false,
            Some("scram") => {
                if kafka_client.sasl_user().is_none() {
                    return Err(ConfigError(
                        "TICKETFLOW_BROKER_AUTH=scram needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (the user created in the embedded broker) and KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT with KAFKA_SASL_MECHANISM=SCRAM-SHA-256 or SCRAM-SHA-512".into(),
                    ));
                }
                true
            }
            Some(v) => {
                return Err(ConfigError(format!(
                    "TICKETFLOW_BROKER_AUTH='{v}' must be none or scram"
                )))
            }
        };
        Ok(Config {
            kafka_brokers: get("KAFKA_BROKERS"),
            scylla: match get("SCYLLA_NODES") {
                None => None,
                Some(nodes) => Some(sinks::store::ScyllaConfig::from_vars(&nodes, get).map_err(ConfigError)?),
            },
            store_options: {
                let key = match (get("TICKETFLOW_MASTER_KEY"), get("TICKETFLOW_MASTER_KEY_FILE")) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError(
                            "set TICKETFLOW_MASTER_KEY or TICKETFLOW_MASTER_KEY_FILE, not both".into(),
                        ))
                    }
                    (Some(k), None) => Some(k),
                    (None, Some(f)) => Some(
                        std::fs::read_to_string(&f)
                            .map_err(|e| ConfigError(format!("cannot read TICKETFLOW_MASTER_KEY_FILE {f}: {e}")))?,
                    ),
                    (None, None) => None,
                };
                let sealer = match key {
                    Some(k) => sinks::store::Sealer::from_key_text(&k).map_err(|e| ConfigError(e.to_string()))?,
                    None => sinks::store::Sealer::none(),
                };
                sinks::store::StoreOptions {
                    sealer: std::sync::Arc::new(sealer),
                    ..Default::default()
                }
            },
            data_dir: PathBuf::from(get("TICKETFLOW_DATA_DIR").unwrap_or_else(|| "./data".into())),
            broker_addr: parse_addr("TICKETFLOW_BROKER_ADDR", "127.0.0.1:9092")?,
            http_addr: parse_addr("TICKETFLOW_HTTP_ADDR", "127.0.0.1:8080")?,
            admin_token: get("TICKETFLOW_ADMIN_TOKEN").map(Secret::new),
            viewer_token: get("TICKETFLOW_VIEWER_TOKEN").map(Secret::new),
            ops_addr: match get("TICKETFLOW_OPS_ADDR") {
                None => None,
                Some(_) => Some(parse_addr("TICKETFLOW_OPS_ADDR", DEFAULT_OPS_ADDR)?),
            },
            lag_monitor: crate::lag::MonitorScope::parse(&get("TICKETFLOW_LAG_MONITOR").unwrap_or_default())
                .map_err(ConfigError)?,
            lag: {
                let dur = |name: &str, default: &str| {
                    parse_duration(&get(name).unwrap_or_else(|| default.into()))
                        .map_err(|e| ConfigError(format!("{name}: {e}")))
                };
                let lag = crate::lag::LagSettings {
                    interval: dur("TICKETFLOW_LAG_INTERVAL", "10s")?,
                    window: dur("TICKETFLOW_LAG_WINDOW", "2m")?,
                    scan_records: parse_num("TICKETFLOW_LAG_SCAN_RECORDS", 10_000)? as usize,
                };
                if lag.interval.is_zero() || lag.window < lag.interval * 2 {
                    return Err(ConfigError(format!(
                        "TICKETFLOW_LAG_WINDOW ({:?}) must hold at least two TICKETFLOW_LAG_INTERVALs ({:?}), and the interval must be above zero",
                        lag.window, lag.interval
                    )));
                }
                lag
            },
            llm_base_url,
            llm_api_key: get("LLM_API_KEY").map(Secret::new),
            llm_model: llm_models[0].clone(),
            llm_models,
            llm_timeout,
            llm_max_prompt_tokens,
            disable_llm: bool_of("DISABLE_LLM_SYNTHESIS")?,
            context_timeout: Duration::from_millis(parse_num("CONTEXT_TIMEOUT_MS", 30_000)?),
            sdp_timeout: positive_ms("SDP_TIMEOUT_MS", parse_num("SDP_TIMEOUT_MS", 20_000)?)?,
            produce_timeout: positive_ms("PRODUCE_TIMEOUT_MS", parse_num("PRODUCE_TIMEOUT_MS", 10_000)?)?,
            webhook_signature_tolerance: match parse_num("WEBHOOK_SIGNATURE_TOLERANCE_S", 300)? {
                0 => {
                    return Err(ConfigError(
                        "WEBHOOK_SIGNATURE_TOLERANCE_S must be at least 1 (seconds)".into(),
                    ))
                }
                s => Duration::from_secs(s),
            },
            retry_tiers,
            breaker_threshold: parse_num("CIRCUIT_BREAKER_THRESHOLD", 5)? as u32,
            breaker_timeout: Duration::from_millis(parse_num("CIRCUIT_BREAKER_TIMEOUT_MS", 60_000)?),
            topic_prefix: prefix,
            partitions: partitions as i32,
            max_body_bytes,
            tenant_rate_per_sec: tenant_rate,
            source_limits,
            unknown_tenant_cache_bytes,
            schema_registry_url: get("SCHEMA_REGISTRY_URL"),
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            drain_timeout: Duration::from_millis(parse_num("TICKETFLOW_DRAIN_TIMEOUT_MS", 20_000)?),
            max_in_flight,
            rate_limit_max_wait: Duration::from_millis(parse_num("TICKETFLOW_RATE_LIMIT_MAX_WAIT_MS", 2000)?),
            stage_memory_bytes: match parse_num("TICKETFLOW_STAGE_MEMORY_MB", 64)? {
                0 => return Err(ConfigError("TICKETFLOW_STAGE_MEMORY_MB must be at least 1".into())),
                mb => (mb as usize) << 20,
            },
            kafka_client,
            topics,
            broker_storage,
            broker_auth,
        })
    }

    /// The bootstrap servers clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.kafka_brokers
            .clone()
            .unwrap_or_else(|| self.broker_addr.to_string())
    }

    /// Path of the embedded store.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("store.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_map(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.broker_addr.to_string(), "127.0.0.1:9092");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.retry_tiers,
            vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600)
            ]
        );
        assert_eq!(c.context_timeout, Duration::from_secs(30));
        assert_eq!(c.breaker_threshold, 5);
        assert_eq!(c.topic_prefix, "ticketflow");
        assert_eq!(c.llm_base_url, "https://openrouter.ai/api/v1");
        assert_eq!(c.llm_models, vec!["openai/gpt-4o-mini".to_string()]);
        assert_eq!(c.llm_timeout, Duration::from_secs(60));
        assert_eq!(c.llm_max_prompt_tokens, 6000);
        let one = cfg(&[("LLM_MODEL", "x/one")]).unwrap();
        assert_eq!((one.llm_model.as_str(), one.llm_models.len()), ("x/one", 1));
        let list = cfg(&[("LLM_MODEL", "x/one"), ("LLM_MODELS", " a/1 , b/2,")]).unwrap();
        assert_eq!(list.llm_models, vec!["a/1".to_string(), "b/2".to_string()]);
        assert_eq!(list.llm_model, "a/1", "LLM_MODELS wins over LLM_MODEL");
        assert!(c.kafka_brokers.is_none() && !c.disable_llm);
    }

    #[test]
    fn every_timeout_is_configurable() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.sdp_timeout, Duration::from_secs(20));
        assert_eq!(c.produce_timeout, Duration::from_secs(10));
        assert_eq!(c.webhook_signature_tolerance, Duration::from_secs(300));
        let c = cfg(&[
            ("SDP_TIMEOUT_MS", "1500"),
            ("PRODUCE_TIMEOUT_MS", "2500"),
            ("WEBHOOK_SIGNATURE_TOLERANCE_S", "60"),
        ])
        .unwrap();
        assert_eq!(c.sdp_timeout, Duration::from_millis(1500));
        assert_eq!(c.produce_timeout, Duration::from_millis(2500));
        assert_eq!(c.webhook_signature_tolerance, Duration::from_secs(60));
        for (k, v) in [
            ("SDP_TIMEOUT_MS", "0"),
            ("SDP_TIMEOUT_MS", "soon"),
            ("PRODUCE_TIMEOUT_MS", "0"),
            ("WEBHOOK_SIGNATURE_TOLERANCE_S", "0"),
            ("WEBHOOK_SIGNATURE_TOLERANCE_S", "5m"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn limits_for_strangers_are_configurable() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.source_limits, ingest::sources::SourceLimits::default());
        assert_eq!(c.source_limits.failures_per_minute, 600);
        assert_eq!(c.unknown_tenant_cache_bytes, 4 * 1024 * 1024);
        let c = cfg(&[
            ("TICKETFLOW_AUTH_FAILURES_PER_MINUTE", "0"),
            ("TICKETFLOW_AUTH_FAILURE_BURST", "5"),
            ("TICKETFLOW_AUTH_FAILURE_SOURCES", "100"),
            ("TICKETFLOW_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8"),
            ("TICKETFLOW_UNKNOWN_TENANT_CACHE_BYTES", "65536"),
        ])
        .unwrap();
        assert_eq!(c.source_limits.failures_per_minute, 0);
        assert_eq!((c.source_limits.burst, c.source_limits.max_sources), (5, 100));
        assert_eq!(c.source_limits.trusted_proxies.len(), 2);
        assert_eq!(c.unknown_tenant_cache_bytes, 65536);
        for (k, v) in [
            ("TICKETFLOW_AUTH_FAILURES_PER_MINUTE", "-1"),
            ("TICKETFLOW_AUTH_FAILURES_PER_MINUTE", "99999999999"),
            ("TICKETFLOW_AUTH_FAILURE_BURST", "0"),
            ("TICKETFLOW_AUTH_FAILURE_SOURCES", "0"),
            ("TICKETFLOW_TRUSTED_PROXIES", "10.0.0.0/40"),
            ("TICKETFLOW_TRUSTED_PROXIES", "proxy.local"),
            ("TICKETFLOW_UNKNOWN_TENANT_CACHE_BYTES", "100"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        for (k, v) in [
            ("TICKETFLOW_HTTP_ADDR", "localhost"),
            ("TICKETFLOW_RETRY_TIERS", "10s,soon"),
            ("CONTEXT_TIMEOUT_MS", "-1"),
            ("DISABLE_LLM_SYNTHESIS", "maybe"),
            ("TICKETFLOW_TOPIC_PREFIX", "a b"),
            ("LLM_BASE_URL", "ftp://x"),
            ("LLM_MODELS", " , "),
            ("LLM_MODELS", "a model,b"),
            ("LLM_TIMEOUT_MS", "0"),
            ("LLM_MAX_PROMPT_TOKENS", "10"),
            ("TICKETFLOW_MAX_IN_FLIGHT_UPDATE", "0"),
            ("KAFKA_SECURITY_PROTOCOL", "TLS"),
            ("KAFKA_SASL_MECHANISM", "MD5"),
            ("KAFKA_PROPERTIES", "no-equals-sign"),
            ("TICKETFLOW_REPLICATION_FACTOR", "0"),
            ("TICKETFLOW_MIN_INSYNC_REPLICAS", "x"),
            ("TICKETFLOW_DLQ_RETENTION", "forever"),
            ("TICKETFLOW_MAX_RECORD_BYTES", "2000"),
            ("TICKETFLOW_BROKER_AUTH", "kerberos"),
            ("TICKETFLOW_BROKER_STORAGE", "not a url"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2d").is_err());
    }
}
