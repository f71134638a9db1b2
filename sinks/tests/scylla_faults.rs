//! The ScyllaDB store's error classification, against errors the driver
//! really receives over the wire: `scylla-proxy` in dry mode (no database
//! behind it, on 127.0.0.1) answers the driver's handshake and forges
//! server errors, slow answers and lost frames. No ScyllaDB server can run
//! on these machines; the store's queries themselves are covered by the
//! contract suite's ScyllaDB lane (`store_contract.rs`, `--ignored`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::DbError;
use scylla::policies::retry::FallthroughRetryPolicy;
use scylla::statement::unprepared::Statement;
use scylla_proxy::{
    Condition, Node, Proxy, Reaction, RequestFrame, RequestOpcode, RequestReaction, RequestRule, ResponseFrame,
    RunningProxy,
};
use sinks::store::{classify_execution_error, ScyllaConfig, ScyllaStore, StoreError, StoreOptions};
use sinks::RetryHint;

/// Every statement of these tests names this keyspace, so rules can tell
/// them from the driver's own metadata queries.
const MARKER: &str = "faultks";

fn free_local_addr() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap()
}

fn ours(op: RequestOpcode) -> Condition {
    Condition::RequestOpcode(op).and(Condition::BodyContainsCaseInsensitive(MARKER.as_bytes().into()))
}

/// A dry-mode node: handshake answered, `rules` applied, every other
/// request (the driver's metadata fetch) answered with a server error so
/// the driver falls back to the contact point at once.
async fn proxy(rules: Vec<RequestRule>) -> (SocketAddr, RunningProxy) {
    let addr = free_local_addr();
    let mut all = vec![
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Options),
            RequestReaction::forge_response(Arc::new(|f: RequestFrame| {
                ResponseFrame::forged_supported(f.params, &HashMap::new()).unwrap()
            })),
        ),
        RequestRule(
            Condition::or(
                Condition::RequestOpcode(RequestOpcode::Startup),
                Condition::RequestOpcode(RequestOpcode::Register),
            ),
            RequestReaction::forge_response(Arc::new(|f: RequestFrame| ResponseFrame::forged_ready(f.params))),
        ),
    ];
    all.extend(rules);
    all.push(RequestRule(
        Condition::any([
            Condition::RequestOpcode(RequestOpcode::Query),
            Condition::RequestOpcode(RequestOpcode::Prepare),
            Condition::RequestOpcode(RequestOpcode::Execute),
            Condition::RequestOpcode(RequestOpcode::Batch),
        ]),
        RequestReaction::forge().server_error(),
    ));
    let running = Proxy::builder()
        .with_node(Node::builder().proxy_address(addr).request_rules(all).build_dry_mode())
        .build()
        .run()
        .await
        .unwrap();
    (addr, running)
}

async fn session(addr: SocketAddr) -> Session {
    SessionBuilder::new()
        .known_node_addr(addr)
        .fetch_schema_metadata(false)
        .build()
        .await
        .expect("the driver connects to the dry-mode proxy")
}

fn stmt(cql: &str) -> Statement {
    let mut s = Statement::new(cql);
    s.set_retry_policy(Some(Arc::new(FallthroughRetryPolicy)));
    s.set_request_timeout(Some(Duration::from_millis(300)));
    s
}

/// Runs `cql` against a proxy that answers it with `reaction`; returns how
/// the store classifies the error the driver surfaced.
async fn classified(reaction: RequestReaction) -> StoreError {
    let (addr, running) = proxy(vec![RequestRule(ours(RequestOpcode::Query), reaction)]).await;
    let s = session(addr).await;
    let err = s
        .query_unpaged(stmt("SELECT * FROM faultks.t"), ())
        .await
        .expect_err("the proxy answers with an error");
    let _ = running.finish().await;
    classify_execution_error(&err)
}

fn retryable(e: &StoreError) -> bool {
    matches!(e.retry_hint(), RetryHint::Retryable { .. })
}

#[tokio::test]
async fn unavailable_replicas_are_retryable() {
    let e = classified(RequestReaction::forge().unavailable()).await;
    assert!(matches!(e, StoreError::Unavailable(_)) && retryable(&e), "{e}");
}

#[tokio::test]
async fn read_and_write_timeouts_are_retryable() {
    for reaction in [
        RequestReaction::forge().read_timeout(),
        RequestReaction::forge().write_timeout(),
    ] {
        let e = classified(reaction).await;
        assert!(matches!(e, StoreError::Unavailable(_)) && retryable(&e), "{e}");
    }
}

#[tokio::test]
async fn overload_and_bootstrapping_are_retryable() {
    for reaction in [
        RequestReaction::forge().overloaded(),
        RequestReaction::forge().is_bootstrapping(),
    ] {
        let e = classified(reaction).await;
        assert!(matches!(e, StoreError::Unavailable(_)) && retryable(&e), "{e}");
    }
}

#[tokio::test]
async fn invalid_syntax_and_unauthorized_queries_are_permanent() {
    for reaction in [
        RequestReaction::forge().invalid(),
        RequestReaction::forge().syntax_error(),
        RequestReaction::forge().unauthorized(),
        RequestReaction::forge_with_error(DbError::AlreadyExists {
            keyspace: "faultks".into(),
            table: "t".into(),
        }),
    ] {
        let e = classified(reaction).await;
        assert!(matches!(e, StoreError::Rejected(_)), "{e}");
        assert_eq!(e.retry_hint(), RetryHint::Permanent, "{e}");
    }
}

#[tokio::test]
async fn a_lost_or_late_answer_is_a_retryable_client_timeout() {
    let e = classified(RequestReaction::drop_frame()).await;
    assert!(matches!(e, StoreError::Unavailable(_)) && retryable(&e), "{e}");
    assert!(e.to_string().contains("client timeout"), "{e}");
    let late =
        RequestReaction::forge_with_error_lazy_delay(Box::new(|| DbError::Overloaded), Some(Duration::from_secs(2)));
    let e = classified(late).await;
    assert!(e.to_string().contains("client timeout"), "{e}");
}

fn config(addr: SocketAddr, timeout_ms: u64) -> ScyllaConfig {
    let get = move |k: &str| match k {
        "SCYLLA_REQUEST_TIMEOUT_MS" => Some(timeout_ms.to_string()),
        "SCYLLA_REPLICATION" => Some("SimpleStrategy:1".into()),
        _ => None,
    };
    ScyllaConfig::from_vars(&addr.to_string(), get).unwrap()
}

/// The store's own startup: the schema check's query failing on the server
/// is reported retryable, with the cause; a node that never answers is
/// bounded by the request timeout, not a hang.
#[tokio::test]
async fn the_store_reports_an_unready_cluster_with_the_cause() {
    let (addr, running) = proxy(vec![]).await;
    let err = ScyllaStore::connect(&config(addr, 500), StoreOptions::default())
        .await
        .err()
        .expect("every query fails");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("ScyllaDB"), "{err}");
    let _ = running.finish().await;

    let (addr, running) = proxy(vec![RequestRule(
        Condition::BodyContainsCaseInsensitive(b"schema_migrations".as_slice().into()),
        RequestReaction::drop_frame(),
    )])
    .await;
    let started = std::time::Instant::now();
    let err = ScyllaStore::connect(&config(addr, 300), StoreOptions::default())
        .await
        .err()
        .expect("the schema check never answers");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the request timeout"
    );
    let _ = running.finish().await;
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let none = |_: &str| None::<String>;
    assert!(ScyllaConfig::from_vars(" , ", none)
        .unwrap_err()
        .contains("names no node"));
    let with = |k: &'static str, v: &'static str| move |q: &str| (q == k).then(|| v.to_string());
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_KEYSPACE", "drop table")).unwrap_err();
    assert!(e.contains("invalid SCYLLA_KEYSPACE"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_CONSISTENCY", "SOME")).unwrap_err();
    assert!(e.contains("invalid SCYLLA_CONSISTENCY"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_CONSISTENCY", "local_one")).unwrap_err();
    assert!(e.contains("below a quorum"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_SERIAL_CONSISTENCY", "ONE")).unwrap_err();
    assert!(e.contains("SCYLLA_SERIAL_CONSISTENCY"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_TABLETS", "off")).unwrap_err();
    assert!(e.contains("SCYLLA_TABLETS"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_REPLICATION", "NetworkTopologyStrategy:dc1=0")).unwrap_err();
    assert!(e.contains("1-15"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_REPLICATION", "Everywhere:3")).unwrap_err();
    assert!(e.contains("class must be"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_USERNAME", "u")).unwrap_err();
    assert!(e.contains("go together"), "{e}");
    let e = ScyllaConfig::from_vars("h", with("SCYLLA_REQUEST_TIMEOUT_MS", "0")).unwrap_err();
    assert!(e.contains("SCYLLA_REQUEST_TIMEOUT_MS"), "{e}");
    let ok = ScyllaConfig::from_vars(
        "a,b:19042",
        with("SCYLLA_REPLICATION", "NetworkTopologyStrategy:dc1=3,dc2=2"),
    )
    .unwrap();
    assert_eq!(ok.nodes, ["a:9042", "b:19042"]);
    assert_eq!(
        ok.replication,
        "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
    );
    assert_eq!(ok.keyspace, "ticketflow");
    let dbg = format!(
        "{:?}",
        ScyllaConfig::from_vars("h", |k: &str| match k {
            "SCYLLA_USERNAME" => Some("u".into()),
            "SCYLLA_PASSWORD" => Some("hunter2".into()),
            _ => None,
        })
        .unwrap()
    );
    assert!(!dbg.contains("hunter2"), "the password never reaches logs: {dbg}");
}
