//! Kafka clients made one way: the producer for no loss (idempotence,
//! `acks=all`, delivery failures surfaced to the caller), consumers, client
//! security (TLS, SASL) and topic creation with production settings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use processors::producer::DurableProducer;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::parse_duration;
use crate::dataflow::{TopicKind, TopicSpec};

/// Client-side security and extra librdkafka properties, applied to every
/// client (producer, consumers, admin).
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// (property, value), in the order they are applied; the pass-through
    /// `KAFKA_PROPERTIES` come last and win.
    properties: Vec<(String, String)>,
}

/// Properties whose values are never printed.
fn is_secret_property(name: &str) -> bool {
    name.contains("password") || name.contains("secret") || name.ends_with(".key.pem") || name.contains("jaas")
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self
            .properties
            .iter()
            .map(|(k, v)| {
                if is_secret_property(k) {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        f.debug_struct("ClientSecurity").field("properties", &shown).finish()
    }
}

impl ClientSecurity {
    /// From `KAFKA_SECURITY_PROTOCOL` (PLAINTEXT, SSL, SASL_PLAINTEXT,
    /// SASL_SSL), `KAFKA_SASL_MECHANISM` (PLAIN, SCRAM-SHA-256,
    /// SCRAM-SHA-512), `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`,
    /// `KAFKA_SSL_CA_LOCATION`, `KAFKA_SSL_CERTIFICATE_LOCATION`,
    /// `KAFKA_SSL_KEY_LOCATION`, `KAFKA_SSL_KEY_PASSWORD`, and
    /// `KAFKA_PROPERTIES` (`name=value` pairs separated by `;` or new
    /// lines, any librdkafka property).
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut properties = Vec::new();
        let protocol = get("KAFKA_SECURITY_PROTOCOL").map(|p| p.to_ascii_uppercase());
        if let Some(p) = &protocol {
            if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&p.as_str()) {
                return Err(format!(
                    "KAFKA_SECURITY_PROTOCOL='{p}' must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                ));
            }
            properties.push(("security.protocol".to_string(), p.to_ascii_lowercase()));
        }
        let sasl = protocol.as_deref().is_some_and(|p| p.starts_with("SASL"));
        let mechanism = get("KAFKA_SASL_MECHANISM").map(|m| m.to_ascii_uppercase());
        if let Some(m) = &mechanism {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&m.as_str()) {
                return Err(format!(
                    "KAFKA_SASL_MECHANISM='{m}' must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ));
            }
        }
        let (user, password) = (get("KAFKA_SASL_USERNAME"), get("KAFKA_SASL_PASSWORD"));
        if sasl {
            let m = mechanism.clone().unwrap_or_else(|| "PLAIN".into());
            if user.is_none() || password.is_none() {
                return Err(format!(
                    "KAFKA_SECURITY_PROTOCOL={} with KAFKA_SASL_MECHANISM={m} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
                    protocol.as_deref().unwrap_or_default()
                ));
            }
            properties.push(("sasl.mechanism".into(), m));
        } else if mechanism.is_some() {
            return Err(
                "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL is not SASL_PLAINTEXT or SASL_SSL".into(),
            );
        }
        if let Some(u) = user {
            properties.push(("sasl.username".into(), u));
        }
        if let Some(p) = password {
            properties.push(("sasl.password".into(), p));
        }
        for (var, prop) in [
            ("KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
            ("KAFKA_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
            ("KAFKA_SSL_KEY_LOCATION", "ssl.key.location"),
            ("KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
        ] {
            if let Some(v) = get(var) {
                properties.push((prop.into(), v));
            }
        }
        if let Some(extra) = get("KAFKA_PROPERTIES") {
            for item in extra.split([';', '\n']).map(str::trim).filter(|i| !i.is_empty()) {
                let (k, v) = item.split_once('=').ok_or_else(|| {
                    format!("KAFKA_PROPERTIES: '{item}' is not name=value (pairs are separated by ';')")
                })?;
                let k = k.trim();
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
                    return Err(format!("KAFKA_PROPERTIES: '{k}' is not a librdkafka property name"));
                }
                properties.push((k.to_string(), v.trim().to_string()));
            }
        }
        Ok(ClientSecurity { properties })
    }

    /// Security from explicit properties (tests, tools).
    pub fn with(properties: &[(&str, &str)]) -> Self {
        ClientSecurity {
            properties: properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// The SASL user and password, when set.
    pub fn sasl_user(&self) -> Option<(String, String)> {
        let get = |name: &str| {
            self.properties
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Some((get("sasl.username")?, get("sasl.password")?))
    }

    /// The SASL mechanism, when set.
    pub fn sasl_mechanism(&self) -> Option<String> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == "sasl.mechanism")
            .map(|(_, v)| v.clone())
    }

    fn apply(&self, c: &mut ClientConfig) {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
    }
}

/// How topics are made: replication, retention per kind, record size.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    /// `TICKETFLOW_REPLICATION_FACTOR`; default: 3, or the broker count
    /// when the cluster has fewer.
    pub replication_factor: Option<i32>,
    /// `TICKETFLOW_MIN_INSYNC_REPLICAS`; default: replication factor - 1
    /// (2 on a 3-broker cluster, so `acks=all` means two copies), at least 1.
    pub min_insync_replicas: Option<i32>,
    /// `TICKETFLOW_RETENTION` (7d): webhooks and stage outputs.
    pub retention: Duration,
    /// `TICKETFLOW_RETRY_RETENTION` (7d): retry tiers.
    pub retry_retention: Duration,
    /// `TICKETFLOW_DLQ_RETENTION` (30d): dead-letter topics.
    pub dlq_retention: Duration,
    /// `TICKETFLOW_MAX_RECORD_BYTES` (4 MiB): the topics'
    /// `max.message.bytes` and the producer's `message.max.bytes`; at least
    /// the ingest body limit plus 64 KiB for the record's metadata, so an
    /// accepted body always fits.
    pub max_record_bytes: usize,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            replication_factor: None,
            min_insync_replicas: None,
            retention: Duration::from_secs(7 * 86_400),
            retry_retention: Duration::from_secs(7 * 86_400),
            dlq_retention: Duration::from_secs(30 * 86_400),
            max_record_bytes: 4 << 20,
        }
    }
}

/// Headroom between the ingest body limit and the record limit: the Avro
/// record carries the body plus the job's metadata and headers.
pub const RECORD_OVERHEAD_BYTES: usize = 64 << 10;

fn parse_days(s: &str) -> Result<Duration, String> {
    match s.trim().strip_suffix('d') {
        Some(n) => n
            .parse::<u64>()
            .map(|d| Duration::from_secs(d * 86_400))
            .map_err(|_| format!("'{s}' is not a duration")),
        None => parse_duration(s),
    }
}

impl TopicSettings {
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>, max_body_bytes: usize) -> Result<Self, String> {
        let d = TopicSettings::default();
        let int = |k: &str| -> Result<Option<i32>, String> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (1..=32).contains(n))
                    .map(Some)
                    .ok_or_else(|| format!("{k}='{v}' must be a number from 1 to 32")),
            }
        };
        let dur = |k: &str, default: Duration| -> Result<Duration, String> {
            match get(k) {
                None => Ok(default),
                Some(v) => parse_days(&v)
                    .map_err(|e| format!("{k}: {e} (like 7d, 12h, 30m)"))
                    .and_then(|x| {
                        if x.is_zero() {
                            Err(format!("{k} must be longer than 0"))
                        } else {
                            Ok(x)
                        }
                    }),
            }
        };
        let replication_factor = int("TICKETFLOW_REPLICATION_FACTOR")?;
        let min_insync_replicas = int("TICKETFLOW_MIN_INSYNC_REPLICAS")?;
        if let (Some(rf), Some(isr)) = (replication_factor, min_insync_replicas) {
            if isr > rf {
                return Err(format!(
                    "TICKETFLOW_MIN_INSYNC_REPLICAS={isr} is more than TICKETFLOW_REPLICATION_FACTOR={rf}: no write could succeed"
                ));
            }
        }
        let max_record_bytes = match get("TICKETFLOW_MAX_RECORD_BYTES") {
            None => d.max_record_bytes.max(max_body_bytes + RECORD_OVERHEAD_BYTES),
            Some(v) => {
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("TICKETFLOW_MAX_RECORD_BYTES='{v}' is not a number of bytes"))?;
                if n < max_body_bytes + RECORD_OVERHEAD_BYTES {
                    return Err(format!(
                        "TICKETFLOW_MAX_RECORD_BYTES={n} must be at least TICKETFLOW_MAX_BODY_BYTES + {RECORD_OVERHEAD_BYTES} = {} so every accepted webhook fits in a record",
                        max_body_bytes + RECORD_OVERHEAD_BYTES
                    ));
                }
                n
            }
        };
        Ok(TopicSettings {
            replication_factor,
            min_insync_replicas,
            retention: dur("TICKETFLOW_RETENTION", d.retention)?,
            retry_retention: dur("TICKETFLOW_RETRY_RETENTION", d.retry_retention)?,
            dlq_retention: dur("TICKETFLOW_DLQ_RETENTION", d.dlq_retention)?,
            max_record_bytes,
        })
    }

    /// The topic configs a topic of this kind gets, for a cluster of
    /// `replication` replicas.
    pub fn configs(&self, kind: TopicKind, replication: i32) -> Vec<(&'static str, String)> {
        let retention = match kind {
            TopicKind::Stream => self.retention,
            TopicKind::Retry => self.retry_retention,
            TopicKind::DeadLetter => self.dlq_retention,
        };
        let isr = self
            .min_insync_replicas
            .unwrap_or((replication - 1).max(1))
            .min(replication);
        vec![
            ("retention.ms", retention.as_millis().to_string()),
            ("max.message.bytes", self.max_record_bytes.to_string()),
            ("min.insync.replicas", isr.to_string()),
            ("cleanup.policy", "delete".into()),
        ]
    }
}

/// A topic whose existing settings differ from what `topics create` would set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMismatch {
    pub topic: String,
    pub what: String,
}

/// How long start-up keeps trying to create topics while the broker's
/// transport fails (a broker that has just started).
const CREATE_TOPICS_PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct KafkaFactory {
    pub bootstrap: String,
    pub security: ClientSecurity,
    pub topics: TopicSettings,
}

impl KafkaFactory {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        KafkaFactory {
            bootstrap: bootstrap.into(),
            security: ClientSecurity::default(),
            topics: TopicSettings::default(),
        }
    }

    /// The factory a configured process uses.
    pub fn from_config(config: &crate::config::Config) -> Self {
        KafkaFactory {
            bootstrap: config.bootstrap_servers(),
            security: config.kafka_client.clone(),
            topics: config.topics.clone(),
        }
    }

    pub fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "ticketflow")
            .set("broker.address.family", "v4")
            .set("log_level", "4");
        self.security.apply(&mut c);
        c
    }

    fn producer_config(&self, delivery_timeout: Duration) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("message.max.bytes", self.topics.max_record_bytes.to_string())
            .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
            .set("request.timeout.ms", "5000");
        // The pass-through properties win over these defaults too.
        self.security.apply(&mut c);
        c
    }

    /// The no-loss producer: idempotent, `acks=all`; a record that the
    /// broker has not acknowledged within `delivery_timeout` is reported
    /// to the caller as failed (never dropped silently).
    pub fn producer(&self, delivery_timeout: Duration) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        self.producer_config(delivery_timeout).create()
    }

    /// The same producer, recreated when it breaks (see
    /// [`processors::producer`]).
    pub fn durable_producer(
        &self,
        delivery_timeout: Duration,
    ) -> Result<Arc<DurableProducer>, rdkafka::error::KafkaError> {
        DurableProducer::new(self.producer_config(delivery_timeout))
    }

    /// Consumer settings every stage consumer starts from.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "300000")
            // nisshi answers an idle fetch by polling its storage within
            // this budget, and a fetch reads from its offset to the high
            // watermark: fewer, larger fetches cost it least.
            .set("fetch.wait.max.ms", "250")
            .set("fetch.max.bytes", "5242880")
            .set("max.partition.fetch.bytes", "5242880")
            .set("topic.metadata.refresh.interval.ms", "5000");
        self.security.apply(&mut c);
        c
    }

    /// A consumer without a group, for reading topics by offset (lag, DLQ, replay).
    pub fn reader(&self, group: Option<&str>) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        self.reader_config(group).create()
    }

    fn reader_config(&self, group: Option<&str>) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group.unwrap_or("ticketflow.reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        c
    }

    /// A reader for looking at one record per partition (the lag report's
    /// age of the oldest unconsumed record): it asks for the least the
    /// broker may answer (the first record) and prefetches nothing more.
    /// With the defaults, each look fetched ~1 MiB per partition, and the
    /// embedded broker serves storage reads one at a time: ingest stalled
    /// for seconds at every 15 s lag refresh once the webhooks topic held a
    /// few hundred thousand records nobody had consumed.
    pub fn peeker(&self, group: Option<&str>) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        self.reader_config(group)
            .set("max.partition.fetch.bytes", "1")
            .set("queued.min.messages", "1")
            .create()
    }

    /// A reader for scanning keys in bounded steps (the lag monitor's
    /// backlog per tenant): modest fetches and prefetch, since every
    /// re-assignment throws the prefetched records away.
    pub fn scanner(&self) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        self.reader_config(None)
            .set("max.partition.fetch.bytes", "262144")
            .set("fetch.max.bytes", "1048576")
            .set("queued.min.messages", "1000")
            .create()
    }

    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, rdkafka::error::KafkaError> {
        self.base().create()
    }

    /// Creates the topics that do not exist yet, with the retention of
    /// their kind, the record size limit, the replication factor and
    /// `min.insync.replicas`; returns the names created.
    pub async fn create_topics(&self, topics: &[TopicSpec]) -> Result<Vec<String>, String> {
        let admin = self.admin().map_err(|e| e.to_string())?;
        let replication = self.replication_factor()?;
        let configs: Vec<Vec<(&'static str, String)>> = topics
            .iter()
            .map(|t| self.topics.configs(t.kind, replication))
            .collect();
        let new: Vec<NewTopic> = topics
            .iter()
            .zip(&configs)
            .map(|(t, cfg)| {
                cfg.iter().fold(
                    NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(replication)),
                    |nt, (k, v)| nt.set(k, v),
                )
            })
            .collect();
        // A broker that has just started (or restarted on its old address)
        // can drop the admin client's first connection: a transport-class
        // failure is tried again for a while before start-up gives up.
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let give_up_at = std::time::Instant::now() + CREATE_TOPICS_PATIENCE;
        let results = loop {
            match admin.create_topics(new.iter(), &opts).await {
                Ok(r) => break r,
                Err(rdkafka::error::KafkaError::AdminOp(code))
                    if matches!(
                        code,
                        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown
                    ) && std::time::Instant::now() < give_up_at =>
                {
                    tracing::warn!(error = %code, "creating topics: broker not reachable yet; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(format!("create topics: {e}")),
            }
        };
        let mut created = Vec::new();
        for r in results {
            match r {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(format!("create topic {name}: {code}")),
            }
        }
        Ok(created)
    }

    /// Replication factor for new topics: `TICKETFLOW_REPLICATION_FACTOR`
    /// (refused when the cluster has fewer brokers), else 3 on a cluster of
    /// 3+ brokers, else the broker count.
    fn replication_factor(&self) -> Result<i32, String> {
        let c: BaseConsumer = self.base().create().map_err(|e| e.to_string())?;
        let brokers = match c.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(m) => m.brokers().len() as i32,
            Err(e) => return Err(format!("broker {} did not answer metadata: {e}", self.bootstrap)),
        };
        match self.topics.replication_factor {
            Some(rf) if rf > brokers.max(1) => Err(format!(
                "TICKETFLOW_REPLICATION_FACTOR={rf} but the cluster has {brokers} broker(s)"
            )),
            Some(rf) => Ok(rf),
            None => Ok(brokers.clamp(1, 3)),
        }
    }

    /// Compares existing topics with what `create_topics` would make:
    /// fewer partitions, a different replication factor, retention,
    /// `max.message.bytes` or `min.insync.replicas`. Topics that do not
    /// exist are skipped.
    pub async fn check_topics(&self, topics: &[TopicSpec]) -> Result<Vec<TopicMismatch>, String> {
        let admin = self.admin().map_err(|e| e.to_string())?;
        let replication = self.replication_factor()?;
        let c: BaseConsumer = self.base().create().map_err(|e| e.to_string())?;
        let meta = c
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| format!("metadata: {e}"))?;
        let existing: HashMap<String, (i32, i32)> = meta
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let rf = t.partitions().first().map_or(0, |p| p.replicas().len() as i32);
                (t.name().to_string(), (t.partitions().len() as i32, rf))
            })
            .collect();
        let present: Vec<&TopicSpec> = topics.iter().filter(|t| existing.contains_key(&t.name)).collect();
        let mut out = Vec::new();
        for t in &present {
            let (parts, rf) = existing[&t.name];
            if parts < t.partitions {
                out.push(TopicMismatch {
                    topic: t.name.clone(),
                    what: format!("{parts} partitions, expected {}", t.partitions),
                });
            }
            if rf != replication {
                out.push(TopicMismatch {
                    topic: t.name.clone(),
                    what: format!("replication factor {rf}, expected {replication}"),
                });
            }
        }
        if present.is_empty() {
            return Ok(out);
        }
        let resources: Vec<ResourceSpecifier> = present.iter().map(|t| ResourceSpecifier::Topic(&t.name)).collect();
        let described = admin
            .describe_configs(
                resources.iter(),
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .map_err(|e| format!("describe topic configs: {e}"))?;
        for (t, r) in present.iter().zip(described) {
            let Ok(res) = r else {
                continue;
            };
            for (k, want) in self.topics.configs(t.kind, replication) {
                let have = res.get(k).and_then(|e| e.value.clone());
                if let Some(have) = have {
                    if have != want {
                        out.push(TopicMismatch {
                            topic: t.name.clone(),
                            what: format!("{k}={have}, expected {want}"),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Waits until the broker answers metadata requests.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let factory = self.clone();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = factory.base().create().map_err(|e| e.to_string())?;
            let deadline = std::time::Instant::now() + timeout;
            loop {
                match c.fetch_metadata(None, Duration::from_secs(2)) {
                    Ok(m) if !m.brokers().is_empty() => return Ok(()),
                    Ok(_) => {}
                    Err(e) if std::time::Instant::now() >= deadline => {
                        return Err(format!("broker {} not reachable: {e}", factory.bootstrap))
                    }
                    Err(_) => {}
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!("broker {} not reachable", factory.bootstrap));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn scram_over_tls_sets_the_client_properties_and_hides_the_password() {
        let s = ClientSecurity::from_vars(&vars(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "ticketflow"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            (
                "KAFKA_PROPERTIES",
                "socket.keepalive.enable=true; fetch.wait.max.ms = 50",
            ),
        ]))
        .unwrap();
        let c = KafkaFactory {
            bootstrap: "127.0.0.1:1".into(),
            security: s.clone(),
            topics: TopicSettings::default(),
        }
        .consumer_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        // The pass-through wins over the defaults.
        assert_eq!(c.get("fetch.wait.max.ms"), Some("50"));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("sasl.password=***"),
            "{shown}"
        );
    }

    #[test]
    fn sasl_without_credentials_is_refused_with_the_variable_names() {
        let e = ClientSecurity::from_vars(&vars(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
        ]))
        .unwrap_err();
        assert!(e.contains("KAFKA_SASL_USERNAME"), "{e}");
        let e = ClientSecurity::from_vars(&vars(&[("KAFKA_SASL_MECHANISM", "PLAIN")])).unwrap_err();
        assert!(e.contains("KAFKA_SECURITY_PROTOCOL"), "{e}");
    }

    #[test]
    fn topic_configs_follow_the_kind_and_the_cluster() {
        let t = TopicSettings::from_vars(&vars(&[]), 1 << 20).unwrap();
        let get = |cfg: Vec<(&'static str, String)>, k: &str| cfg.into_iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(
            get(t.configs(TopicKind::DeadLetter, 3), "retention.ms"),
            (30u64 * 86_400_000).to_string()
        );
        assert_eq!(
            get(t.configs(TopicKind::Stream, 3), "retention.ms"),
            (7u64 * 86_400_000).to_string()
        );
        assert_eq!(get(t.configs(TopicKind::Stream, 3), "min.insync.replicas"), "2");
        assert_eq!(get(t.configs(TopicKind::Stream, 1), "min.insync.replicas"), "1");
        assert_eq!(
            get(t.configs(TopicKind::Retry, 1), "max.message.bytes"),
            (4u64 << 20).to_string()
        );
        // A body limit above the default record size raises the record size.
        let big = TopicSettings::from_vars(&vars(&[]), 8 << 20).unwrap();
        assert_eq!(big.max_record_bytes, (8 << 20) + RECORD_OVERHEAD_BYTES);
        let e = TopicSettings::from_vars(&vars(&[("TICKETFLOW_MAX_RECORD_BYTES", "1048576")]), 1 << 20).unwrap_err();
        assert!(e.contains("TICKETFLOW_MAX_BODY_BYTES"), "{e}");
        let e = TopicSettings::from_vars(
            &vars(&[
                ("TICKETFLOW_REPLICATION_FACTOR", "1"),
                ("TICKETFLOW_MIN_INSYNC_REPLICAS", "2"),
            ]),
            1 << 20,
        )
        .unwrap_err();
        assert!(e.contains("no write could succeed"), "{e}");
    }
}
