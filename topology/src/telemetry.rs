//! Logs as JSON lines through `tracing` (every line of a job carries the
//! job span's `correlation_id`, `tenant_id`, `ticket_id`), filtered by
//! `RUST_LOG`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "warn,topology=info,ingest=info,processors=info,sinks=info,ticketflow=info";

/// JSON logs to stderr. `quiet` (the demo) keeps only warnings unless `RUST_LOG` says otherwise.
pub fn init(quiet: bool) {
    let default = if quiet { "error" } else { DEFAULT_FILTER };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
}
