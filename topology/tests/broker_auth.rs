//! Kafka client security for real: the embedded broker with SASL SCRAM
//! authentication on (`TICKETFLOW_BROKER_AUTH=scram`), clients configured
//! through `KAFKA_SECURITY_PROTOCOL` / `KAFKA_SASL_*`.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use topology::broker::{upsert_scram_user, BrokerOptions, EmbeddedBroker};
use topology::dataflow::{TopicKind, TopicSpec};
use topology::kafka::{ClientSecurity, KafkaFactory, TopicSettings};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn factory(addr: &str, mechanism: &str, user: &str, password: &str) -> KafkaFactory {
    let vars: HashMap<&str, String> = [
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT".to_string()),
        ("KAFKA_SASL_MECHANISM", mechanism.to_string()),
        ("KAFKA_SASL_USERNAME", user.to_string()),
        ("KAFKA_SASL_PASSWORD", password.to_string()),
    ]
    .into_iter()
    .collect();
    KafkaFactory {
        bootstrap: addr.to_string(),
        security: ClientSecurity::from_vars(&|k: &str| vars.get(k).cloned()).unwrap(),
        topics: TopicSettings::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scram_authenticated_clients_produce_and_consume_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let opts = BrokerOptions {
        authentication: true,
        ..BrokerOptions::default()
    };
    upsert_scram_user(dir.path(), &opts, "ticketflow", "s3cret-pw")
        .await
        .unwrap();
    let _broker = EmbeddedBroker::start_with(addr, dir.path(), opts).await.unwrap();

    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let good = factory(&addr.to_string(), mechanism, "ticketflow", "s3cret-pw");
        good.wait_ready(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        let topic = format!("auth.{}", mechanism.to_ascii_lowercase());
        good.create_topics(&[TopicSpec {
            name: topic.clone(),
            partitions: 1,
            kind: TopicKind::Stream,
        }])
        .await
        .unwrap();
        let producer = good.durable_producer(Duration::from_secs(10)).unwrap();
        let (p, off) = producer
            .send(&topic, "t:1", b"hello", OwnedHeaders::new(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!((p, off), (0, 0));
        let topic2 = topic.clone();
        let read = tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = good.reader(None).unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic2, 0, Offset::Beginning).unwrap();
            c.assign(&tpl).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                    return m.payload().map(<[u8]>::to_vec);
                }
            }
            None
        })
        .await
        .unwrap();
        assert_eq!(read.as_deref(), Some(&b"hello"[..]), "{mechanism}");
    }

    // A wrong password, and a client without SASL, get nothing.
    let bad = factory(&addr.to_string(), "SCRAM-SHA-256", "ticketflow", "wrong");
    assert!(bad.wait_ready(Duration::from_secs(4)).await.is_err(), "wrong password");
    let plain = KafkaFactory::new(addr.to_string());
    assert!(plain.wait_ready(Duration::from_secs(4)).await.is_err(), "no SASL");
}
