//! Raw limits measured in the same run, so results are ratios: the plain
//! rdkafka produce rate to the same broker (same producer settings as
//! ingest), and a trivial axum handler hit by the same request code.

use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

const PRODUCE_COUNT: usize = 30_000;
const PRODUCE_IN_FLIGHT: usize = 2_000;
const HTTP_CONCURRENCY: usize = 64;

/// Produce rate of plain rdkafka, records the size of a webhook record.
pub async fn raw_produce(bootstrap: &str) -> anyhow::Result<f64> {
    let factory = topology::kafka::KafkaFactory::new(bootstrap);
    factory
        .create_topics(&[topology::dataflow::TopicSpec {
            name: "loadtest.raw".into(),
            partitions: 6,
            kind: topology::dataflow::TopicKind::Stream,
        }])
        .await
        .map_err(anyhow::Error::msg)?;
    let producer = factory.producer(Duration::from_secs(30))?;
    let payload = vec![b'x'; 700];
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut ok = 0usize;
    for i in 0..PRODUCE_COUNT {
        let key = format!("tenant{}:{}", i % 3, i);
        let p = producer.clone();
        let payload = payload.clone();
        inflight.push(async move {
            p.send(
                FutureRecord::to("loadtest.raw").key(&key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .is_ok()
        });
        if inflight.len() >= PRODUCE_IN_FLIGHT {
            ok += usize::from(inflight.next().await.unwrap_or(false));
        }
    }
    while let Some(r) = inflight.next().await {
        ok += usize::from(r);
    }
    Ok(ok as f64 / started.elapsed().as_secs_f64())
}

/// A handler that does nothing but answer 202 with a job id.
async fn trivial() -> (axum::http::StatusCode, Json<Value>) {
    (
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"job_id": "j", "correlation_id": "c"})),
    )
}

/// Closed-loop request rate of a trivial axum handler, same client and request shape.
pub async fn trivial_axum(http: &reqwest::Client, duration: Duration) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            Router::new().route("/webhooks/servicedesk/{tenant}", post(trivial)),
        )
        .await
    });
    let secret = ingest::signature::generate_secret();
    let (http, base) = (http.clone(), format!("http://{addr}"));
    let (ok, _, took) = crate::generator::closed_loop(HTTP_CONCURRENCY, duration, move |i| {
        let (http, base, secret) = (http.clone(), base.clone(), secret.clone());
        async move {
            let (_, _, id, body) = crate::webhook(i, "raw", 1, 1_000_000, 100_000);
            matches!(
                crate::send_one(&http, &base, "tenant0", &secret, &id, body).await,
                crate::Outcome::Accepted { .. }
            )
        }
    })
    .await;
    server.abort();
    Ok(ok as f64 / took.as_secs_f64())
}

/// Closed-loop rate of Ticketflow's ingest (signed webhooks, broker acknowledgement).
pub async fn ingest_closed_loop(
    http: &reqwest::Client,
    base: &str,
    secrets: &[(String, String)],
    duration: Duration,
) -> f64 {
    let (http, base, secrets) = (http.clone(), base.to_string(), secrets.to_vec());
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (ok, _, took) = crate::generator::closed_loop(HTTP_CONCURRENCY, duration, move |i| {
        let (http, base, secrets, run) = (http.clone(), base.clone(), secrets.clone(), run.clone());
        async move {
            let (t, _, id, body) = crate::webhook(i, &format!("cl{run}"), secrets.len(), 1_000_000, 100_000);
            matches!(
                crate::send_one(&http, &base, &secrets[t].0, &secrets[t].1, &id, body).await,
                crate::Outcome::Accepted { .. }
            )
        }
    })
    .await;
    ok as f64 / took.as_secs_f64()
}

pub async fn measure(bootstrap: &str, http: &reqwest::Client, warmup: Duration) -> anyhow::Result<Value> {
    let _ = trivial_axum(http, warmup.min(Duration::from_secs(2))).await?;
    let axum_rate = trivial_axum(http, Duration::from_secs(5)).await?;
    let produce_rate = raw_produce(bootstrap).await?;
    Ok(
        json!({"raw_produce_per_sec": produce_rate, "trivial_axum_per_sec": axum_rate, "produce_records": PRODUCE_COUNT, "http_concurrency": HTTP_CONCURRENCY}),
    )
}
