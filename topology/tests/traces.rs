//! Traces (ARCHITECTURE §8): the real `ticketflow run` exports its spans
//! over OTLP/HTTP to a collector running in this test on loopback; one
//! trace per webhook across every Kafka hop, retry tiers and the
//! dead-letter topic included, with the semantic-convention attributes; an
//! incoming `traceparent` is honoured; spans queued at exit are flushed.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::free_port;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use sinks::servicedesk::SdpAuth;
use sinks::sim::{LlmSimulator, SdpFault, SdpSimulator};
use sinks::store::{EmbeddedStore, HistoryStatus, HistoryStore};
use topology::telemetry::{SamplerSpec, TraceSettings};

/// One span as the collector received it, with its resource's attributes.
#[derive(Clone, Debug)]
struct Got {
    resource: HashMap<String, String>,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        attr_of(&self.span.attributes, key)
    }
    fn has(&self, key: &str, value: &str) -> bool {
        self.attr(key).as_deref() == Some(value)
    }
    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn failed(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr_of(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

/// An OTLP/HTTP trace receiver on `127.0.0.1:0` (protobuf bodies).
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
    posts: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

type Sink = (Arc<Mutex<Vec<Got>>>, Arc<Mutex<u32>>);

async fn receive(State((spans, posts)): State<Sink>, body: Bytes) -> axum::http::StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    *posts.lock().unwrap() += 1;
    let mut out = spans.lock().unwrap();
    for rs in req.resource_spans {
        let resource: HashMap<String, String> = rs
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), attr_of(&r.attributes, &kv.key)?)))
                    .collect()
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Got {
                    resource: resource.clone(),
                    span,
                });
            }
        }
    }
    axum::http::StatusCode::OK
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let posts: Arc<Mutex<u32>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state((spans.clone(), posts.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            url,
            spans,
            posts,
            task,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    fn posts(&self) -> u32 {
        *self.posts.lock().unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn settings(url: &str, sampler: &str, arg: Option<&str>) -> TraceSettings {
    let vars: HashMap<&str, String> = [("OTEL_TRACES_SAMPLER", sampler.to_string())]
        .into_iter()
        .chain(arg.map(|a| ("OTEL_TRACES_SAMPLER_ARG", a.to_string())))
        .collect();
    let (s, warnings) = TraceSettings::from_vars(Some(url), "validate", |k| vars.get(k).cloned());
    assert!(warnings.is_empty(), "{warnings:?}");
    s.unwrap()
}

/// Makes `n` root spans through a provider built from `s`, then shuts it
/// down (which flushes); returns how long the shutdown took.
async fn export_spans(s: TraceSettings, n: usize) -> Duration {
    tokio::task::spawn_blocking(move || {
        let provider = s.provider().unwrap();
        let tracer = provider.tracer("test");
        for i in 0..n {
            let mut span = tracer.start(format!("span {i}"));
            span.end();
        }
        let started = Instant::now();
        let _ = provider.shutdown();
        started.elapsed()
    })
    .await
    .unwrap()
}

#[test]
fn sampler_and_settings_come_from_the_standard_variables() {
    let p = |n: Option<&str>, a: Option<&str>| SamplerSpec::parse(n, a);
    assert_eq!(p(None, None).unwrap(), SamplerSpec::default());
    assert_eq!(
        p(Some("parentbased_always_on"), None).unwrap(),
        SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOn))
    );
    assert_eq!(p(Some("always_off"), None).unwrap(), SamplerSpec::AlwaysOff);
    assert_eq!(
        p(Some("traceidratio"), Some("0.25")).unwrap(),
        SamplerSpec::TraceIdRatio(0.25)
    );
    assert_eq!(p(Some("traceidratio"), None).unwrap(), SamplerSpec::TraceIdRatio(1.0));
    assert_eq!(
        p(Some("parentbased_traceidratio"), Some(" 0 ")).unwrap(),
        SamplerSpec::ParentBased(Box::new(SamplerSpec::TraceIdRatio(0.0)))
    );
    assert!(p(Some("traceidratio"), Some("1.5")).is_err());
    assert!(p(Some("traceidratio"), Some("half")).is_err());
    assert!(p(Some("sometimes"), None).is_err());

    let get = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    // No endpoint: no traces.
    assert_eq!(TraceSettings::from_vars(None, "ingest", get(&[])).0, None);
    let (s, w) = TraceSettings::from_vars(Some("http://collector:4318/"), "ingest, validate", get(&[]));
    let s = s.unwrap();
    assert!(w.is_empty());
    assert_eq!(s.traces_url, "http://collector:4318/v1/traces");
    assert_eq!(s.service_name, "ticketflow");
    assert_eq!(s.stages, "ingest,validate");
    assert_eq!(s.sampler, SamplerSpec::default());
    let (s, _) = TraceSettings::from_vars(
        Some("http://collector:4318"),
        "record",
        get(&[
            ("OTEL_SERVICE_NAME", "tf-record"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/custom"),
        ]),
    );
    let s = s.unwrap();
    assert_eq!(
        (s.service_name.as_str(), s.traces_url.as_str()),
        ("tf-record", "http://other:4318/custom")
    );
    for off in [
        &[("OTEL_SDK_DISABLED", "true")][..],
        &[("OTEL_TRACES_EXPORTER", "none")][..],
    ] {
        assert_eq!(
            TraceSettings::from_vars(Some("http://c:4318"), "record", get(off)).0,
            None
        );
    }
    // A bad sampler is reported and the default used.
    let (s, w) = TraceSettings::from_vars(
        Some("http://c:4318"),
        "record",
        get(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]),
    );
    assert_eq!(s.unwrap().sampler, SamplerSpec::default());
    assert_eq!(w.len(), 1, "{w:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_decides_what_is_exported_and_a_dead_collector_costs_nothing() {
    let collector = Collector::start().await;
    export_spans(settings(&collector.url, "always_off", None), 20).await;
    export_spans(settings(&collector.url, "traceidratio", Some("0")), 20).await;
    assert_eq!(collector.spans().len(), 0, "nothing sampled, nothing exported");
    export_spans(settings(&collector.url, "always_on", None), 20).await;
    assert_eq!(collector.spans().len(), 20, "flushed at shutdown");
    assert!(collector.posts() >= 1);
    let got = &collector.spans()[0];
    assert_eq!(got.resource.get("service.name").map(String::as_str), Some("ticketflow"));
    assert_eq!(
        got.resource.get("ticketflow.stages").map(String::as_str),
        Some("validate")
    );

    // Nobody listens: ending spans never waits, and the exit flush is bounded.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let took = export_spans(settings(&dead, "always_on", None), 3000).await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}

struct Proc {
    vars: Vec<(String, String)>,
}

impl Proc {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ticketflow"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn add_tenant(&self, id: &str, url: &str, token: &str) -> String {
        let out = self
            .command(&[
                "tenants",
                "add",
                id,
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                token,
                "--servicedesk-auth",
                "zoho",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let added: Value = serde_json::from_slice(&out.stdout).unwrap();
        added["webhook_secret"].as_str().unwrap().to_string()
    }
}

/// Stops the child with SIGTERM and waits for it (killing it if it hangs).
struct Running(Child);

impl Running {
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                panic!("ticketflow did not exit within 40 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    secret: &str,
    ticket: &str,
    traceparent: Option<&str>,
) -> Value {
    let body = format!(
        r#"{{"event":"request_created","request":{{"id":"{ticket}","subject":"VPN drops every hour","description":"Since Monday the VPN disconnects hourly","priority":"High"}}}}"#
    );
    let id = format!("trace-{tenant}-{ticket}");
    let ts = sinks::now_ms() / 1000;
    let sig = ingest::signature::sign(secret, &id, ts, body.as_bytes()).unwrap();
    let mut rb = http
        .post(format!("{base}/webhooks/servicedesk/{tenant}"))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .timeout(Duration::from_secs(15));
    if let Some(tp) = traceparent {
        rb = rb.header("traceparent", tp);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    r.json().await.unwrap()
}

/// The checks on one job's trace; returns the spans of the trace.
struct Trace {
    spans: Vec<Got>,
    by_id: HashMap<String, Got>,
}

impl Trace {
    fn of(all: &[Got], trace_id: &str) -> Trace {
        let spans: Vec<Got> = all.iter().filter(|g| g.trace_id() == trace_id).cloned().collect();
        let by_id = spans.iter().map(|g| (g.span_id(), g.clone())).collect();
        Trace { spans, by_id }
    }

    fn parent(&self, g: &Got) -> Option<&Got> {
        self.by_id.get(&g.parent_id())
    }

    /// The consumer spans of `stage`, by attempt.
    fn process(&self, stage: &str) -> Vec<&Got> {
        let mut v: Vec<&Got> = self
            .spans
            .iter()
            .filter(|g| g.kind() == SpanKind::Consumer && g.has("stage", stage))
            .collect();
        v.sort_by_key(|g| g.attr("ticketflow.attempt").and_then(|a| a.parse::<i64>().ok()));
        v
    }

    /// Checks that `process` is a child of a producer span that wrote its
    /// record, itself a child of `writer`.
    fn assert_hop(&self, process: &Got, writer: &Got) {
        let send = self
            .parent(process)
            .unwrap_or_else(|| panic!("{}: parent {} not in the trace", process.span.name, process.parent_id()));
        assert_eq!(
            send.kind(),
            SpanKind::Producer,
            "{} <- {}",
            process.span.name,
            send.span.name
        );
        let topic = process.attr("messaging.destination.name").unwrap();
        assert_eq!(send.span.name, format!("send {topic}"));
        assert!(send.has("messaging.destination.name", &topic));
        assert!(send.has("messaging.operation.type", "send"));
        assert!(send.has("messaging.system", "kafka"));
        assert_eq!(
            send.attr("messaging.kafka.offset"),
            process.attr("messaging.kafka.offset"),
            "the record sent is the record processed"
        );
        assert_eq!(
            send.attr("messaging.destination.partition.id"),
            process.attr("messaging.destination.partition.id")
        );
        assert_eq!(
            send.parent_id(),
            writer.span_id(),
            "{} is written by {}",
            topic,
            writer.span.name
        );
    }

    /// Client spans (SDP, LLM, store) directly under `parent`.
    fn clients_under(&self, parent: &Got) -> Vec<&Got> {
        self.spans
            .iter()
            .filter(|g| g.kind() == SpanKind::Client && g.parent_id() == parent.span_id())
            .collect()
    }
}

fn assert_job_attributes(g: &Got, tenant: &str, ticket: &str, job: &Value) {
    assert!(
        g.has("tenant_id", tenant),
        "{}: tenant_id {:?}",
        g.span.name,
        g.attr("tenant_id")
    );
    assert!(g.has("ticket_id", ticket), "{}: ticket_id", g.span.name);
    assert!(
        g.has("job_id", job["job_id"].as_str().unwrap()),
        "{}: job_id",
        g.span.name
    );
    assert!(
        g.has("correlation_id", job["correlation_id"].as_str().unwrap()),
        "{}: correlation_id",
        g.span.name
    );
}

fn assert_process_span(g: &Got, stage: &str, tenant: &str, ticket: &str, job: &Value) {
    assert_eq!(g.kind(), SpanKind::Consumer);
    let topic = g.attr("messaging.destination.name").unwrap();
    assert!(topic.starts_with("ticketflow."), "{topic}");
    assert_eq!(g.span.name, format!("process {topic}"));
    assert!(g.has("messaging.system", "kafka"));
    assert!(g.has("messaging.operation.type", "process"));
    assert!(g.has("messaging.consumer.group.name", &format!("ticketflow.{stage}")));
    assert!(g.has("messaging.kafka.message.key", &format!("{tenant}:{ticket}")));
    assert!(g
        .attr("messaging.kafka.offset")
        .is_some_and(|o| o.parse::<i64>().is_ok()));
    assert!(g.attr("messaging.destination.partition.id").is_some());
    assert_job_attributes(g, tenant, ticket, job);
}

const STAGE_INPUTS: [(&str, &str); 5] = [
    ("validate", "ticketflow.webhooks"),
    ("context", "ticketflow.validated"),
    ("synthesize", "ticketflow.context"),
    ("update", "ticketflow.synthesized"),
    ("record", "ticketflow.updated"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_per_webhook_across_every_kafka_hop() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sdp = SdpSimulator::start().await.unwrap();
    sdp.add_portal("acme", SdpAuth::Zoho, "zoho-acme");
    sdp.add_portal("beta", SdpAuth::Zoho, "zoho-beta");
    sdp.auto_create_requests(true);
    // beta's SDP fails every call: its update goes through the retry tiers
    // and the dead-letter topic, in the same trace.
    sdp.set_fault("beta", Some(SdpFault::ServerErrors { fraction: 1.0 }));
    let llm = LlmSimulator::start().await.unwrap();
    let http_port = free_port();
    let base = format!("http://127.0.0.1:{http_port}");
    let proc = Proc {
        vars: vec![
            ("TICKETFLOW_DATA_DIR".into(), dir.path().display().to_string()),
            ("TICKETFLOW_BROKER_ADDR".into(), format!("127.0.0.1:{}", free_port())),
            ("TICKETFLOW_HTTP_ADDR".into(), format!("127.0.0.1:{http_port}")),
            ("TICKETFLOW_OPS_ADDR".into(), format!("127.0.0.1:{}", free_port())),
            ("TICKETFLOW_PARTITIONS".into(), "3".into()),
            ("TICKETFLOW_RETRY_TIERS".into(), "200ms,200ms,200ms".into()),
            ("TICKETFLOW_DRAIN_TIMEOUT_MS".into(), "10000".into()),
            ("CIRCUIT_BREAKER_THRESHOLD".into(), "1000".into()),
            ("LLM_BASE_URL".into(), llm.base_url()),
            ("LLM_API_KEY".into(), "sk-test".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.url.clone()),
            // Nothing is exported before exit: what arrives was flushed at
            // shutdown.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into()),
        ],
    };
    let acme_secret = proc.add_tenant("acme", &sdp.base_url("acme"), "zoho-acme");
    let beta_secret = proc.add_tenant("beta", &sdp.base_url("beta"), "zoho-beta");

    let mut child = Running(
        proc.command(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "ticketflow run did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let incoming_trace = "0af7651916cd43dd8448eb211c80319c";
    let incoming_span = "b7ad6b7169203331";
    let plain = send(&http, &base, "acme", &acme_secret, "501", None).await;
    let continued = send(
        &http,
        &base,
        "acme",
        &acme_secret,
        "502",
        Some(&format!("00-{incoming_trace}-{incoming_span}-01")),
    )
    .await;
    let failing = send(&http, &base, "beta", &beta_secret, "601", None).await;

    // Wait until every job is recorded (and the notes posted).
    let store = EmbeddedStore::open(&dir.path().join("store.db")).await.unwrap();
    let jobs = [("acme", &plain), ("acme", &continued), ("beta", &failing)];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rows = HashMap::new();
    while rows.len() < jobs.len() {
        for (tenant, job) in jobs {
            let id = job["job_id"].as_str().unwrap();
            if let Some(row) = store.history_by_job(tenant, id).await.unwrap() {
                rows.insert(id.to_string(), row);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs recorded",
            rows.len(),
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(
        rows[plain["job_id"].as_str().unwrap()].status,
        HistoryStatus::Success | HistoryStatus::Fallback
    ));
    assert_eq!(rows[failing["job_id"].as_str().unwrap()].status, HistoryStatus::Failed);
    for job in [&plain, &continued] {
        let id = job["job_id"].as_str().unwrap();
        assert_eq!(
            sdp.notes().iter().filter(|n| n.description.contains(id)).count(),
            1,
            "one note for {id}"
        );
    }
    assert_eq!(collector.spans().len(), 0, "the batch delay holds spans until exit");

    let status = child.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let all = collector.spans();
    assert!(!all.is_empty(), "spans are flushed at shutdown");
    for g in &all {
        assert_eq!(g.resource.get("service.name").map(String::as_str), Some("ticketflow"));
        assert_eq!(
            g.resource.get("ticketflow.stages").map(String::as_str),
            Some("ingest,validate,context,synthesize,update,record")
        );
    }

    for (tenant, ticket, job, incoming) in [
        ("acme", "501", &plain, None),
        ("acme", "502", &continued, Some((incoming_trace, incoming_span))),
        ("beta", "601", &failing, None),
    ] {
        let job_id = job["job_id"].as_str().unwrap();
        // Every span that names the job is in one trace.
        let traces: std::collections::BTreeSet<String> = all
            .iter()
            .filter(|g| g.has("job_id", job_id))
            .map(Got::trace_id)
            .collect();
        assert_eq!(traces.len(), 1, "job {job_id} spans {} traces", traces.len());
        let trace = Trace::of(&all, traces.first().unwrap());

        // Ingest: the server span, root or child of the caller's span.
        let servers: Vec<&Got> = trace.spans.iter().filter(|g| g.kind() == SpanKind::Server).collect();
        assert_eq!(servers.len(), 1, "one ingest span for {job_id}");
        let ingest = servers[0];
        assert_eq!(ingest.span.name, "POST /webhooks/servicedesk/{tenant_id}");
        assert!(ingest.has("http.request.method", "POST"));
        assert!(ingest.has("http.route", "/webhooks/servicedesk/{tenant_id}"));
        assert!(ingest.has("http.response.status_code", "202"));
        assert_job_attributes(ingest, tenant, ticket, job);
        match incoming {
            None => assert_eq!(ingest.parent_id(), "", "the ingest span is the trace's root"),
            Some((t, s)) => {
                assert_eq!(ingest.trace_id(), t, "the webhook's traceparent is honoured");
                assert_eq!(ingest.parent_id(), s);
            }
        }
        // Ingest's store calls are under it.
        assert!(trace
            .clients_under(ingest)
            .iter()
            .any(|c| c.has("db.operation.name", "claim_webhook") && c.has("db.system", "sqlite")));

        // Each stage processes the record the previous hop wrote.
        let mut writer = ingest;
        for (stage, input) in STAGE_INPUTS {
            let spans = trace.process(stage);
            assert!(!spans.is_empty(), "no {stage} span for {job_id}");
            let first = spans[0];
            if stage == "record" && tenant == "beta" {
                // The failed job reaches record through update's dead-letter topic.
                assert!(first.has("messaging.destination.name", "ticketflow.update.dlq"));
            } else {
                assert!(first.has("messaging.destination.name", input), "{stage}");
            }
            assert_process_span(first, stage, tenant, ticket, job);
            trace.assert_hop(first, writer);
            writer = first;
            if stage == "update" && tenant == "beta" {
                // A span per attempt: tier 1, 2, 3, each written by the
                // attempt before; every one failed.
                assert_eq!(spans.len(), 4, "update attempts of {job_id}");
                for (i, attempt) in spans.iter().enumerate() {
                    assert!(attempt.has("ticketflow.attempt", &(i + 1).to_string()));
                    assert!(attempt.failed(), "attempt {} failed", i + 1);
                    if i > 0 {
                        assert!(attempt.has("messaging.destination.name", &format!("ticketflow.update.retry.{i}")));
                        assert_process_span(attempt, stage, tenant, ticket, job);
                        trace.assert_hop(attempt, spans[i - 1]);
                    }
                }
                writer = spans[3];
            } else {
                assert_eq!(spans.len(), 1, "{stage} of {job_id} ran once");
                assert!(!first.failed(), "{stage} of {job_id}");
            }

            let clients = trace.clients_under(first);
            let sdp_calls: Vec<&&Got> = clients
                .iter()
                .filter(|c| c.has("peer.service", "servicedesk"))
                .collect();
            for c in &sdp_calls {
                assert!(
                    c.attr("url.full").unwrap().starts_with(&sdp.base_url(tenant)),
                    "{:?}",
                    c.attr("url.full")
                );
                assert!(c.has("server.address", "127.0.0.1"));
                assert!(c.attr("server.port").is_some());
                assert!(c.attr("http.request.method").is_some());
                assert!(c.attr("http.response.status_code").is_some());
            }
            match stage {
                "validate" => assert!(clients.iter().any(|c| c.has("db.operation.name", "claim_event"))),
                "context" => {
                    let get = sdp_calls
                        .iter()
                        .find(|c| c.span.name == "GET /api/v3/requests/{id}")
                        .expect("the ticket is fetched from SDP");
                    assert!(get.has("http.request.method", "GET"));
                    let code = if tenant == "beta" { "500" } else { "200" };
                    assert!(get.has("http.response.status_code", code));
                    assert_eq!(get.failed(), tenant == "beta");
                }
                "synthesize" => {
                    let chat = clients
                        .iter()
                        .find(|c| c.has("peer.service", "llm"))
                        .expect("an LLM client span");
                    assert!(chat.has("http.request.method", "POST"));
                    assert!(chat.has("http.response.status_code", "200"));
                    assert!(chat.attr("url.full").unwrap().ends_with("/chat/completions"));
                    assert!(chat.attr("gen_ai.request.model").is_some());
                }
                "update" if tenant == "acme" => {
                    let post = sdp_calls
                        .iter()
                        .find(|c| c.span.name == "POST /api/v3/requests/{id}/notes")
                        .expect("the note is posted");
                    assert!(post
                        .attr("http.response.status_code")
                        .is_some_and(|c| c.starts_with('2')));
                    assert!(clients.iter().any(|c| c.has("db.operation.name", "note_posted")));
                }
                "update" => {
                    let post = sdp_calls
                        .iter()
                        .find(|c| c.span.name == "POST /api/v3/requests/{id}/notes")
                        .expect("the note post is tried");
                    assert!(post.has("http.response.status_code", "500") && post.failed());
                }
                "record" => assert!(clients
                    .iter()
                    .any(|c| c.has("db.operation.name", "put_history") && c.has("db.system", "sqlite"))),
                _ => {}
            }
        }
    }
}
