//! Logs and traces (ARCHITECTURE §8).
//!
//! Logs: JSON lines through `tracing` (every line of a job carries the job
//! span's `correlation_id`, `tenant_id`, `ticket_id`), filtered by
//! `RUST_LOG`.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, `ticketflow run` exports its
//! spans over OTLP/HTTP (protobuf) to `<endpoint>/v1/traces`: the
//! `tracing-opentelemetry` layer turns the spans of `ingest`, `processors`
//! and `sinks` into OpenTelemetry spans (how the context crosses Kafka:
//! `processors::trace`). Export is batched on the SDK's own thread: a span
//! ending only queues it (a full queue drops spans, never waits), and a
//! collector that is down costs failed exports, never a stalled or failed
//! pipeline. [`Telemetry`] flushes what is queued when the process ends.
//!
//! Standard variables: `OTEL_SERVICE_NAME` (default `ticketflow`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` (`always_on`,
//! `always_off`, `traceidratio`, `parentbased_always_on` (default),
//! `parentbased_always_off`, `parentbased_traceidratio`) with
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`),
//! `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`. The resource carries
//! `ticketflow.stages`, the process's `--stages`.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;

const DEFAULT_FILTER: &str = "warn,topology=info,ingest=info,processors=info,sinks=info,ticketflow=info";

/// The crates whose spans become trace spans (and `processors::trace::TARGET`).
const TRACED_TARGETS: [&str; 5] = [processors::trace::TARGET, "ingest", "processors", "sinks", "topology"];

/// The default service name (`OTEL_SERVICE_NAME` overrides it).
pub const SERVICE_NAME: &str = "ticketflow";

/// How long the final flush may take at exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A sampler as `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name it.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerSpec {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this fraction of traces (0.0 to 1.0), by trace id.
    TraceIdRatio(f64),
    /// Follows the parent's decision; a root span uses the inner sampler.
    ParentBased(Box<SamplerSpec>),
}

impl Default for SamplerSpec {
    /// `parentbased_always_on`, the specification's default.
    fn default() -> Self {
        SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOn))
    }
}

impl SamplerSpec {
    /// Reads `OTEL_TRACES_SAMPLER` (`name`) and `OTEL_TRACES_SAMPLER_ARG`
    /// (`arg`); unset is the default. A ratio sampler without an argument
    /// samples everything (the specification's default argument, 1.0).
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<SamplerSpec, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "OTEL_TRACES_SAMPLER_ARG='{a}' must be a number from 0 to 1 (the fraction of traces kept)"
                    )),
                },
            }
        };
        let parent = |s: SamplerSpec| SamplerSpec::ParentBased(Box::new(s));
        Ok(match name.map(str::trim).unwrap_or("") {
            "" | "parentbased_always_on" => parent(SamplerSpec::AlwaysOn),
            "always_on" => SamplerSpec::AlwaysOn,
            "always_off" => SamplerSpec::AlwaysOff,
            "traceidratio" => SamplerSpec::TraceIdRatio(ratio()?),
            "parentbased_always_off" => parent(SamplerSpec::AlwaysOff),
            "parentbased_traceidratio" => parent(SamplerSpec::TraceIdRatio(ratio()?)),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER='{other}' is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ))
            }
        })
    }

    /// The SDK's sampler.
    pub fn sampler(&self) -> Sampler {
        match self {
            SamplerSpec::AlwaysOn => Sampler::AlwaysOn,
            SamplerSpec::AlwaysOff => Sampler::AlwaysOff,
            SamplerSpec::TraceIdRatio(r) => Sampler::TraceIdRatioBased(*r),
            SamplerSpec::ParentBased(inner) => Sampler::ParentBased(Box::new(inner.sampler())),
        }
    }
}

/// What trace export needs, read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Where spans are posted (`…/v1/traces`).
    pub traces_url: String,
    pub service_name: String,
    /// The process's `--stages`, as the resource attribute `ticketflow.stages`.
    pub stages: String,
    pub sampler: SamplerSpec,
}

impl TraceSettings {
    /// `None` when traces are off (no endpoint, `OTEL_SDK_DISABLED=true`,
    /// `OTEL_TRACES_EXPORTER=none`). `otlp_endpoint` is
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (from [`Config`]); `get` reads the
    /// other variables. Returns warnings for settings it had to ignore.
    pub fn from_vars(
        otlp_endpoint: Option<&str>,
        stages: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> (Option<TraceSettings>, Vec<String>) {
        let mut warnings = Vec::new();
        let get = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return (None, warnings);
        }
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return (None, warnings),
            Some(other) => warnings.push(format!(
                "OTEL_TRACES_EXPORTER='{other}' is not supported (only otlp or none); exporting over OTLP"
            )),
        }
        let traces_url = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            otlp_endpoint.map(str::trim).filter(|e| !e.is_empty()),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return (None, warnings),
        };
        if let Some(p) = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            if p != "http/protobuf" {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL='{p}' is not supported; exporting over http/protobuf"
                ));
            }
        }
        let sampler = match SamplerSpec::parse(
            get("OTEL_TRACES_SAMPLER").as_deref(),
            get("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("{e}; using parentbased_always_on"));
                SamplerSpec::default()
            }
        };
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| {
                get("OTEL_RESOURCE_ATTRIBUTES").and_then(|attrs| {
                    attrs.split(',').find_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        (k.trim() == "service.name" && !v.trim().is_empty()).then(|| v.trim().to_string())
                    })
                })
            })
            .unwrap_or_else(|| SERVICE_NAME.to_string());
        let settings = TraceSettings {
            traces_url,
            service_name,
            stages: stages.split(',').map(str::trim).collect::<Vec<_>>().join(","),
            sampler,
        };
        (Some(settings), warnings)
    }

    /// The tracer provider: OTLP/HTTP exporter behind a batch processor.
    pub fn provider(&self) -> Result<SdkTracerProvider, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(self.traces_url.clone())
            .build()
            .map_err(|e| format!("OTLP exporter for {}: {e}", self.traces_url))?;
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("ticketflow.stages", self.stages.clone()),
            ])
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(self.sampler.sampler())
            .with_resource(resource)
            .build())
    }
}

/// Keeps trace export alive; flushes and stops it when dropped (or on
/// [`Telemetry::shutdown`]).
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces_on(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is queued (bounded by a few seconds) and stops export.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            processors::trace::set_enabled(false);
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(error = %e, "trace export did not flush at exit");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// JSON logs to stderr. `quiet` (the demo) keeps only warnings unless `RUST_LOG` says otherwise.
pub fn init(quiet: bool) {
    install(quiet, None);
}

/// Logs, and traces when configured (only for `run`: `stages` is its
/// `--stages`; other commands pass `None`).
pub fn init_with_traces(config: &Config, stages: Option<&str>) -> Telemetry {
    processors::trace::set_db_system(if config.scylla.is_some() { "cassandra" } else { "sqlite" });
    let (settings, warnings) = match stages {
        Some(stages) => TraceSettings::from_vars(config.otlp_endpoint.as_deref(), stages, |k| std::env::var(k).ok()),
        None => (None, Vec::new()),
    };
    let (provider, error) = match settings.as_ref().map(TraceSettings::provider) {
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    install(false, provider.clone());
    for w in warnings {
        tracing::warn!("{w}");
    }
    if let Some(e) = error {
        tracing::warn!(error = %e, "traces are not exported");
    }
    if let (Some(s), Some(_)) = (&settings, &provider) {
        tracing::info!(endpoint = %s.traces_url, service = %s.service_name, sampler = ?s.sampler, "exporting traces over OTLP");
    }
    Telemetry { provider }
}

fn install(quiet: bool, provider: Option<SdkTracerProvider>) {
    let default = if quiet { "error" } else { DEFAULT_FILTER };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if provider.is_some() {
        // Spans made only for traces pass the global filter…
        if let Ok(d) = format!("{}=info", processors::trace::TARGET).parse() {
            filter = filter.add_directive(d);
        }
    }
    // …and never reach the logs. RUST_LOG is the global filter (as a
    // per-layer filter it let nisshi's `debug!` events through whatever it
    // said: ≈ 8,000 lines/s from an idle `run`), so it bounds traces too:
    // keep our crates at `info` for complete traces.
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(|m| m.target() != processors::trace::TARGET));
    // The trace layer has its own filter, so RUST_LOG does not turn traces
    // off: our spans at INFO and above, and warnings and errors inside them
    // (as span events).
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ticketflow"))
            .with_threads(false)
            .with_filter(filter_fn(|m| {
                TRACED_TARGETS.iter().any(|t| m.target().starts_with(t))
                    && if m.is_span() {
                        *m.level() <= Level::INFO
                    } else {
                        *m.level() <= Level::WARN
                    }
            }))
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(traces)
        .try_init()
        .is_ok();
    processors::trace::set_enabled(installed && provider.is_some());
}
