//! Every metric of ARCHITECTURE §8, defined once so names never drift.

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    pub webhooks_received: IntCounterVec,
    pub webhook_request_duration: HistogramVec,
    pub stage_records: IntCounterVec,
    pub stage_duration: HistogramVec,
    pub stage_inflight: IntGaugeVec,
    pub retries: IntCounterVec,
    pub dlq_records: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub consumer_lag_seconds: GaugeVec,
    pub external_request_duration: HistogramVec,
    pub circuit_breaker_state: IntGaugeVec,
    pub enhancements: IntCounterVec,
    /// Burrow-style verdict per group: 1 on the group's current status, 0 on the others.
    pub consumer_group_status: IntGaugeVec,
    /// Records waiting per group and tenant (keys are `tenant:ticket`).
    pub tenant_backlog: IntGaugeVec,
    /// Estimated seconds until a group's lag reaches zero at the rate of the window; -1 when it is not draining.
    pub consumer_lag_drain_seconds: GaugeVec,
    /// Records a group's committed offsets advanced per second over the window (cluster-wide throughput).
    pub consumer_group_rate: GaugeVec,
    /// Records waiting on each stage's dead-letter topic (high minus low watermark).
    pub dlq_depth: IntGaugeVec,
    /// Webhook received (ingest) to note posted (update), per job.
    pub end_to_end_duration: HistogramVec,
    /// Technician feedback received, by tenant, rating and helpfulness.
    pub feedback: IntCounterVec,
    /// 1 while a stage of this process runs and holds what it needs, else 0.
    pub stage_ready: IntGaugeVec,
    /// LLM requests the provider rejected (400/401/402/403/404: key, credit,
    /// model or request problems a retry cannot fix), by status and model.
    pub llm_rejected: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = exponential_buckets(0.001, 2.5, 14).expect("valid buckets");
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("metric registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn float_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        // CPU seconds, resident and virtual memory, open and max file
        // descriptors, start time and threads of this process
        // (`process_*`, the names every Prometheus client uses).
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registered once");
        let consumer_lag_seconds = GaugeVec::new(
            Opts::new(
                "ticketflow_consumer_lag_seconds",
                "Age of the oldest unconsumed record per group and topic",
            ),
            &["group", "topic"],
        )
        .expect("valid metric");
        r.register(Box::new(consumer_lag_seconds.clone()))
            .expect("metric registered once");
        Metrics {
            webhooks_received: counter(
                &r,
                "ticketflow_webhooks_received_total",
                "Webhooks received by tenant and outcome",
                &["tenant", "outcome"],
            ),
            webhook_request_duration: histogram(
                &r,
                "ticketflow_webhook_request_duration_seconds",
                "Webhook request handling time, including the broker acknowledgement",
                &[],
            ),
            stage_records: counter(
                &r,
                "ticketflow_stage_records_total",
                "Records handled per stage and outcome",
                &["stage", "outcome"],
            ),
            stage_duration: histogram(
                &r,
                "ticketflow_stage_duration_seconds",
                "Time a stage spent on one record",
                &["stage"],
            ),
            stage_inflight: gauge(
                &r,
                "ticketflow_stage_inflight",
                "Records taken by a stage and not yet finished",
                &["stage"],
            ),
            retries: counter(
                &r,
                "ticketflow_retries_total",
                "Records sent to a retry tier",
                &["stage", "tier"],
            ),
            dlq_records: counter(
                &r,
                "ticketflow_dlq_records_total",
                "Records sent to a dead-letter topic",
                &["stage"],
            ),
            consumer_lag: gauge(
                &r,
                "ticketflow_consumer_lag",
                "Records behind the high watermark per group and partition",
                &["group", "topic", "partition"],
            ),
            consumer_lag_seconds,
            external_request_duration: histogram(
                &r,
                "ticketflow_external_request_duration_seconds",
                "Calls to external systems",
                &["system", "outcome"],
            ),
            circuit_breaker_state: gauge(
                &r,
                "ticketflow_circuit_breaker_state",
                "0 closed, 1 open, 2 half-open",
                &["system"],
            ),
            enhancements: counter(
                &r,
                "ticketflow_enhancements_total",
                "Finished enhancement jobs by tenant and history status",
                &["tenant", "status"],
            ),
            consumer_group_status: gauge(
                &r,
                "ticketflow_consumer_group_status",
                "1 on the group's current lag status (OK, WARN, ERR, STOP, STALL, REWIND), 0 on the others",
                &["group", "status"],
            ),
            tenant_backlog: gauge(
                &r,
                "ticketflow_tenant_backlog",
                "Records not yet consumed per group and tenant",
                &["group", "tenant"],
            ),
            consumer_lag_drain_seconds: float_gauge(
                &r,
                "ticketflow_consumer_lag_drain_seconds",
                "Estimated time for a group to drain its lag at the window's net rate; -1 when not draining",
                &["group"],
            ),
            consumer_group_rate: float_gauge(
                &r,
                "ticketflow_consumer_group_records_per_second",
                "Rate at which a group's committed offsets advance (all its members together)",
                &["group"],
            ),
            dlq_depth: gauge(
                &r,
                "ticketflow_dlq_depth",
                "Records held by a stage's dead-letter topic",
                &["stage"],
            ),
            end_to_end_duration: {
                let buckets = vec![
                    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0,
                    600.0, 1800.0,
                ];
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "ticketflow_end_to_end_duration_seconds",
                        "Webhook received by ingest to note posted on the ticket",
                    )
                    .buckets(buckets),
                    &[],
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("metric registered once");
                h
            },
            feedback: counter(
                &r,
                "ticketflow_feedback_total",
                "Technician feedback by tenant, rating (1-5) and helpful (true/false)",
                &["tenant", "rating", "helpful"],
            ),
            stage_ready: gauge(
                &r,
                "ticketflow_stage_ready",
                "1 while the stage runs in this process and holds its partitions, else 0",
                &["stage"],
            ),
            llm_rejected: counter(
                &r,
                "ticketflow_llm_rejected_total",
                "LLM requests the provider rejected (400/401/402/403/404), by HTTP status and model",
                &["status", "model"],
            ),
            registry: r,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        out
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Records one external call's duration and outcome.
pub fn observe_external(system: &str, ok: bool, started: std::time::Instant) {
    metrics()
        .external_request_duration
        .with_label_values(&[system, if ok { "ok" } else { "error" }])
        .observe(started.elapsed().as_secs_f64());
}
