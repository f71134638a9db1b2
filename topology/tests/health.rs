//! Readiness tells the truth: a stage that died, a producer that is fatally
//! broken, and a stage that holds no partition while its group has lag and
//! no other member each make `/health/ready` answer 503 with the reason, and
//! a process that cannot recover reports it so `run` exits non-zero.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Harness, Tenant};
use rdkafka::producer::Producer;
use serde_json::Value;
use sinks::servicedesk::SdpAuth;
use topology::dataflow::Dataflow;
use topology::health::{ProcessHealth, StageHealth};
use topology::kafka::KafkaFactory;

const ACME: Tenant = Tenant {
    id: "acme",
    auth: SdpAuth::AuthToken,
    token: "key-acme",
};

async fn ready(h: &Harness) -> (u16, Value) {
    let r = h.http.get(format!("{}/health/ready", h.base())).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The process checks that failed, as one string.
fn reasons(v: &Value) -> String {
    v["reasons"].to_string()
}

/// A stage task that panics or fails to start shows on readiness with the
/// reason, and is fatal after its bound (so `run` exits non-zero); one that
/// ends because the process stops is not a problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stage_task_that_dies_fails_readiness_and_is_fatal() {
    let factory = KafkaFactory::new("127.0.0.1:1");
    let producer = factory.durable_producer(Duration::from_secs(1)).unwrap();
    let flow = Dataflow::new("hd", 1, vec![]);
    let (v, c, r) = (
        flow.wiring("validate", 1, Duration::ZERO),
        flow.wiring("context", 1, Duration::ZERO),
        flow.wiring("record", 1, Duration::ZERO),
    );
    let health = ProcessHealth::new(
        [&v, &c, &r]
            .iter()
            .map(|w| StageHealth {
                name: w.stage,
                group: w.group.clone(),
                probe: w.probe.clone(),
            })
            .collect(),
        producer,
        None,
    );
    let mut stages = tokio::task::JoinSet::new();
    let token = tokio_util::sync::CancellationToken::new();
    topology::app::supervise_stage(
        &mut stages,
        "validate",
        async { panic!("boom in the stage loop") },
        token.clone(),
        health.clone(),
    );
    topology::app::supervise_stage(
        &mut stages,
        "context",
        async { Err(rdkafka::error::KafkaError::Subscription("no such topic".into())) },
        token.clone(),
        health.clone(),
    );
    let stopping = tokio_util::sync::CancellationToken::new();
    stopping.cancel();
    topology::app::supervise_stage(&mut stages, "record", async { Ok(()) }, stopping, health.clone());
    while stages.join_next().await.is_some() {}

    let checks: HashMap<String, Result<(), String>> =
        ingest::ProcessChecks::checks(health.as_ref()).into_iter().collect();
    let v = checks["stage:validate"].clone().unwrap_err();
    assert!(v.contains("panicked"), "{v}");
    let c = checks["stage:context"].clone().unwrap_err();
    assert!(c.contains("failed to start") && c.contains("no such topic"), "{c}");
    assert!(checks["stage:record"].is_ok(), "a stage stopped on purpose is fine");
    assert!(health.fatal().is_none(), "shown on readiness before it is fatal");
    tokio::time::sleep(topology::health::DEAD_FATAL).await;
    let fatal = health.fatal().expect("fatal after its bound");
    assert!(fatal.contains("stage:"), "{fatal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fatally_broken_producer_fails_readiness_until_it_is_recreated() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    let (s, v) = h.send("acme", "1", "w-1", "before").await;
    assert_eq!(s, 202, "{v}");
    // Let the pipeline go idle: no stage traffic trips over the broken
    // producer before readiness is asked.
    let job = v["job_id"].as_str().unwrap().to_string();
    h.wait_history(&[("acme".to_string(), job)], Duration::from_secs(60))
        .await;
    let (s, _) = ready(&h).await;
    assert_eq!(s, 200);

    // librdkafka's own fault injection: the idempotent producer's fatal error.
    let producer = h.running().producer();
    let before = producer.recreations();
    let client = producer.current();
    let reason = std::ffi::CString::new("injected by the test").unwrap();
    let err = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            client.client().native_ptr(),
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    assert_eq!(err, rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    drop(client);
    let (s, v) = ready(&h).await;
    assert_eq!(s, 503, "{v}");
    assert!(reasons(&v).contains("producer fatal error"), "{v}");

    // The next webhook trips over it: that one may get 503 (never a 202
    // that is not durable), the producer is recreated, the retry gets 202.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = h.send("acme", "2", "w-2", "after").await;
        if s == 202 {
            break;
        }
        assert_eq!(s, 503, "{v}");
        assert!(Instant::now() < deadline, "no 202 after the producer broke");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(producer.recreations() > before, "the producer was recreated");
    let (s, v) = ready(&h).await;
    assert_eq!(s, 200, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stage_without_partitions_while_its_group_has_lag_fails_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let _broker = topology::broker::EmbeddedBroker::start(addr, dir.path()).await.unwrap();
    let factory = KafkaFactory::new(addr.to_string());
    factory.wait_ready(Duration::from_secs(30)).await.unwrap();
    let flow = Dataflow::new("hl", 1, vec![Duration::from_secs(1)]);
    factory.create_topics(&flow.topics()).await.unwrap();
    let producer = factory.durable_producer(Duration::from_secs(10)).unwrap();
    for i in 0..5 {
        producer
            .send(
                &flow.webhooks(),
                &format!("t:{i}"),
                b"x",
                rdkafka::message::OwnedHeaders::new(),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    // A validate stage that runs (subscribed) but was given nothing, and no
    // other member in its group: the group's lag can never drain.
    let wiring = flow.wiring("validate", 8, Duration::from_secs(1));
    wiring.probe.running.store(true, Ordering::Relaxed);
    let health = ProcessHealth::with_unassigned_bounds(
        vec![StageHealth {
            name: "validate",
            group: wiring.group.clone(),
            probe: wiring.probe.clone(),
        }],
        producer.clone(),
        Duration::from_secs(2),
        Duration::from_secs(4),
    );
    let ops = topology::ops::KafkaOps {
        factory: factory.clone(),
        dataflow: flow.clone(),
        services: None,
        monitor: None,
    };
    let lag: HashMap<String, i64> = ops.lag_totals().await.unwrap();
    assert_eq!(lag.get(&wiring.group), Some(&5), "{lag:?}");
    health.check(&factory, &lag).await;
    let checks = ingest::ProcessChecks::checks(health.as_ref());
    assert!(
        checks.iter().all(|(_, r)| r.is_ok()),
        "within the grace nothing fails yet: {checks:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    health.check(&factory, &lag).await;
    let checks = ingest::ProcessChecks::checks(health.as_ref());
    let failed: Vec<_> = checks.iter().filter(|(_, r)| r.is_err()).collect();
    assert_eq!(failed.len(), 1, "{checks:?}");
    let reason = failed[0].1.clone().unwrap_err();
    assert!(
        failed[0].0 == "stage:validate" && reason.contains("holds no partition") && reason.contains("lag 5"),
        "{checks:?}"
    );
    assert!(health.fatal().is_none(), "not fatal before its bound");
    tokio::time::sleep(Duration::from_secs(2)).await;
    health.check(&factory, &lag).await;
    let fatal = health.fatal().expect("fatal after its bound");
    assert!(fatal.contains("unassigned:validate"), "{fatal}");

    // Once the stage holds a partition, the problem clears.
    wiring.probe.assigned.store(1, Ordering::Relaxed);
    health.check(&factory, &lag).await;
    assert!(health.fatal().is_none());
    assert!(ingest::ProcessChecks::checks(health.as_ref())
        .iter()
        .all(|(_, r)| r.is_ok()));
}
