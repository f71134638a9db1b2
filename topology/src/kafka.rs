//! Kafka clients made one way: the producer for no loss (idempotence,
//! `acks=all`, delivery failures surfaced to the caller), consumers, and
//! idempotent topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::dataflow::TopicSpec;

#[derive(Debug, Clone)]
pub struct KafkaFactory {
    pub bootstrap: String,
}

impl KafkaFactory {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        KafkaFactory {
            bootstrap: bootstrap.into(),
        }
    }

    pub fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "ticketflow")
            .set("broker.address.family", "v4")
            .set("log_level", "4");
        c
    }

    /// The no-loss producer: idempotent, `acks=all`; a record that the
    /// broker has not acknowledged within `delivery_timeout` is reported
    /// to the caller as failed (never dropped silently).
    pub fn producer(&self, delivery_timeout: Duration) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        self.base()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
            .set("request.timeout.ms", "5000")
            .create()
    }

    /// Consumer settings every stage consumer starts from.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "300000")
            .set("fetch.wait.max.ms", "100")
            .set("topic.metadata.refresh.interval.ms", "5000");
        c
    }

    /// A consumer without a group, for reading topics by offset (lag, DLQ, replay).
    pub fn reader(&self, group: Option<&str>) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        let mut c = self.base();
        c.set("group.id", group.unwrap_or("ticketflow.reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        c.create()
    }

    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, rdkafka::error::KafkaError> {
        self.base().create()
    }

    /// Creates the topics that do not exist yet; returns the names created.
    pub async fn create_topics(&self, topics: &[TopicSpec]) -> Result<Vec<String>, String> {
        let admin = self.admin().map_err(|e| e.to_string())?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1)))
            .collect();
        let replication_ok = self.replication_factor();
        let new: Vec<NewTopic> = new
            .into_iter()
            .map(|t| NewTopic {
                replication: TopicReplication::Fixed(replication_ok),
                ..t
            })
            .collect();
        let results = admin
            .create_topics(
                new.iter(),
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .map_err(|e| format!("create topics: {e}"))?;
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

    /// Replication factor for new topics: 3 on a real cluster of 3+ brokers, else the broker count.
    fn replication_factor(&self) -> i32 {
        let Ok(c): Result<BaseConsumer, _> = self.base().create() else {
            return 1;
        };
        match c.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(m) => (m.brokers().len() as i32).clamp(1, 3),
            Err(_) => 1,
        }
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
