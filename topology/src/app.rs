//! Wires a running Ticketflow: broker (embedded or external), topics, store,
//! stage services, the stages this process runs, and ingest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use processors::stages::{
    ContextStage, RecordStage, Services, StageSettings, SynthesizeStage, UpdateStage, ValidateStage,
};
use processors::Stage;
use sinks::breaker::CircuitBreaker;
use sinks::llm::LlmClient;
use sinks::servicedesk::{SdpClient, SdpGuards};
use sinks::store::{EmbeddedStore, ScyllaStore, Store, TenantCache};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::{BrokerOptions, EmbeddedBroker};
use crate::config::Config;
use crate::dataflow::{Dataflow, STAGES};
use crate::health::{ProcessHealth, StageHealth, Watchdog};
use crate::kafka::KafkaFactory;
use crate::ops::KafkaOps;

/// How soon a running process sees tenant changes made by the CLI.
pub const TENANT_CACHE_TTL: Duration = Duration::from_secs(2);

/// Parts of `run` that a process can run: `ingest` and the five stages.
pub const COMPONENTS: [&str; 6] = ["ingest", "validate", "context", "synthesize", "update", "record"];

/// Parses `--stages a,b,c`.
pub fn parse_components(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if !COMPONENTS.contains(&c) {
            return Err(format!(
                "unknown stage '{c}': expected some of {}",
                COMPONENTS.join(",")
            ));
        }
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    }
    if out.is_empty() {
        return Err("--stages lists nothing".into());
    }
    Ok(out)
}

pub fn dataflow(config: &Config) -> Dataflow {
    Dataflow::new(&config.topic_prefix, config.partitions, config.retry_tiers.clone())
}

/// Opens the store named by the configuration.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(scylla) = &config.scylla {
        let store = ScyllaStore::connect(scylla, config.store_options.clone())
            .await
            .with_context(|| format!("opening ScyllaDB store at {}", scylla.nodes.join(",")))?;
        return Ok(Arc::new(store));
    }
    let store = EmbeddedStore::open_with(&config.store_path(), config.store_options.clone())
        .await
        .with_context(|| format!("opening store {}", config.store_path().display()))?;
    Ok(Arc::new(store))
}

/// `ticketflow migrate`: brings the configured store's schema up to date;
/// returns what it says to the operator.
pub async fn migrate_store(config: &Config) -> anyhow::Result<String> {
    let (place, applied) = match &config.scylla {
        Some(scylla) => (
            format!("ScyllaDB keyspace {} at {}", scylla.keyspace, scylla.nodes.join(",")),
            ScyllaStore::migrate(scylla).await?,
        ),
        None => (
            format!("store {}", config.store_path().display()),
            EmbeddedStore::migrate_file(&config.store_path()).await?,
        ),
    };
    Ok(if applied.is_empty() {
        format!("{place} is up to date")
    } else {
        format!("{place}: applied {}", applied.join(", "))
    })
}

pub fn services(config: &Config, store: Arc<dyn Store>) -> Arc<Services> {
    Arc::new(Services {
        tenants: TenantCache::with_negative_budget(store, TENANT_CACHE_TTL, config.unknown_tenant_cache_bytes),
        sdp: SdpClient::new(config.sdp_timeout),
        llm: LlmClient::new(
            config.llm_base_url.clone(),
            config.llm_api_key.clone(),
            config.llm_model.clone(),
            config.llm_timeout,
        )
        .with_models(config.llm_models.clone()),
        sdp_guards: SdpGuards::new(
            config.breaker_threshold,
            config.breaker_timeout,
            config.rate_limit_max_wait,
        ),
        llm_breaker: CircuitBreaker::new("llm", config.breaker_threshold, config.breaker_timeout),
        settings: StageSettings {
            context_timeout: config.context_timeout,
            context_source_timeout: config.context_timeout.min(Duration::from_secs(10)),
            disable_llm: config.disable_llm,
            llm_timeout: config.llm_timeout,
            // The first try plus one per retry tier.
            max_attempts: config.retry_tiers.len() as u32 + 1,
            llm_max_prompt_tokens: config.llm_max_prompt_tokens,
        },
    })
}

/// A running Ticketflow process.
pub struct Running {
    /// Where ingest listens, when this process runs it.
    pub http_addr: Option<SocketAddr>,
    /// Where a process without ingest serves health, metrics, lag and the
    /// dashboard (`TICKETFLOW_OPS_ADDR`).
    pub ops_addr: Option<SocketAddr>,
    pub bootstrap: String,
    pub store: Arc<dyn Store>,
    pub services: Arc<Services>,
    pub ops: Arc<KafkaOps>,
    stages: JoinSet<()>,
    stage_shutdown: CancellationToken,
    ingest_shutdown: CancellationToken,
    ingest_state: Option<Arc<ingest::IngestState>>,
    ingest_task: Option<tokio::task::JoinHandle<()>>,
    background: CancellationToken,
    producer: Arc<processors::producer::DurableProducer>,
    drain_timeout: Duration,
    /// This process's own health (stages, producer, broker).
    pub health: Arc<ProcessHealth>,
    fatal: tokio::sync::watch::Receiver<Option<String>>,
    _broker: Option<Arc<EmbeddedBroker>>,
}

/// The embedded broker's options from the configuration.
pub fn broker_options(config: &Config) -> BrokerOptions {
    BrokerOptions {
        storage: config.broker_storage.clone(),
        authentication: config.broker_auth,
        ..BrokerOptions::default()
    }
}

/// Starts the embedded broker as configured, with the SCRAM user of
/// `KAFKA_SASL_USERNAME` when `TICKETFLOW_BROKER_AUTH=scram`.
pub async fn start_embedded_broker(config: &Config) -> anyhow::Result<EmbeddedBroker> {
    let opts = broker_options(config);
    if config.broker_auth {
        let (user, password) = config
            .kafka_client
            .sasl_user()
            .context("TICKETFLOW_BROKER_AUTH=scram needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")?;
        crate::broker::upsert_scram_user(&config.data_dir, &opts, &user, &password)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    EmbeddedBroker::start_with(config.broker_addr, &config.data_dir, opts)
        .await
        .map_err(anyhow::Error::msg)
}

/// How often freed memory is handed back to the operating system.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc's allocator keeps what the broker's, the stages' and the runtime's
/// threads free in per-thread arenas instead of returning it: after a
/// 100,000-ticket backlog the process kept hundreds of MiB it no longer
/// used. `malloc_trim` returns the free pages of every arena; it runs off
/// the runtime's workers every [`TRIM_EVERY`] while the process runs. (A
/// cap on arenas, `MALLOC_ARENA_MAX=2`, held memory lower too but drained
/// the backlog at less than half the rate; mimalloc held more.)
fn trim_freed_memory(token: CancellationToken) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(TRIM_EVERY) => {}
            }
            // SAFETY: malloc_trim only releases free memory of the
            // allocator's own arenas; it is safe to call at any time from
            // any thread.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    drop(token);
}

/// Runs a stage's loop in its own task and records its death in `health`
/// when it ends (returned, failed to start, or panicked) while `token` is
/// not cancelled.
pub fn supervise_stage<F>(
    stages: &mut JoinSet<()>,
    name: &'static str,
    run: F,
    token: CancellationToken,
    health: Arc<ProcessHealth>,
) where
    F: std::future::Future<Output = Result<(), rdkafka::error::KafkaError>> + Send + 'static,
{
    stages.spawn(async move {
        // A panic inside the stage loop ends the inner task, not this
        // watcher: either way the death is recorded.
        let reason = match tokio::spawn(run).await {
            Ok(Ok(())) if token.is_cancelled() => return,
            Ok(Ok(())) => "the stage loop returned".to_string(),
            Ok(Err(e)) => format!("the stage failed to start: {e}"),
            Err(e) => format!("the stage task panicked: {e}"),
        };
        error!(stage = name, reason = %reason, "stage ended");
        health.stage_died(name, reason);
    });
}

/// Starts the broker (embedded when `KAFKA_BROKERS` is unset), creates the
/// topics, and starts the given components.
pub async fn start(config: &Config, components: &[String]) -> anyhow::Result<Running> {
    if let Some(url) = &config.schema_registry_url {
        bail!("SCHEMA_REGISTRY_URL={url} is set, but this build writes only Avro single-object encoding; unset SCHEMA_REGISTRY_URL");
    }
    let broker = match &config.kafka_brokers {
        None => Some(Arc::new(start_embedded_broker(config).await?)),
        Some(_) => None,
    };
    let factory = KafkaFactory::from_config(config);
    factory
        .wait_ready(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    let flow = dataflow(config);
    let created = factory
        .create_topics(&flow.topics())
        .await
        .map_err(anyhow::Error::msg)?;
    if !created.is_empty() {
        info!(count = created.len(), "topics created");
    }
    match factory.check_topics(&flow.topics()).await {
        Ok(mismatches) => {
            for m in mismatches {
                warn!(topic = %m.topic, differs = %m.what, "existing topic differs from the configured settings (`ticketflow topics create --check` lists all)");
            }
        }
        Err(e) => warn!(error = %e, "could not compare existing topics with the configured settings"),
    }
    let store = open_store(config).await?;
    let services = services(config, store.clone());
    let producer = factory
        .durable_producer(config.produce_timeout)
        .context("creating producer")?;
    // Every process serves health, metrics, lag and the dashboard: on the
    // ingest address when it runs ingest, else on TICKETFLOW_OPS_ADDR. Bound
    // before any stage starts, so a taken address fails the start cleanly.
    let runs_ingest = components.iter().any(|c| c == "ingest");
    let listener = if runs_ingest {
        tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding TICKETFLOW_HTTP_ADDR {}", config.http_addr))?
    } else {
        match config.ops_addr {
            Some(addr) => tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding TICKETFLOW_OPS_ADDR {addr}"))?,
            // Unset: the default port, or any free one when another process
            // on this host has it (several stage processes on one machine).
            None => match tokio::net::TcpListener::bind(crate::config::DEFAULT_OPS_ADDR).await {
                Ok(l) => l,
                Err(e) => {
                    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .context("binding an ops address on 127.0.0.1")?;
                    warn!(default = crate::config::DEFAULT_OPS_ADDR, error = %e, ops = %l.local_addr()?, "default ops address taken; serving health and metrics on another port (set TICKETFLOW_OPS_ADDR to choose)");
                    l
                }
            },
        }
    };
    let bound = listener.local_addr()?;
    let monitored = config.lag_monitor.stages(components);
    let monitor = (!monitored.is_empty()).then(|| {
        Arc::new(crate::lag::LagMonitor::new(factory.clone(), flow.clone(), monitored, config.lag.clone()).exporting())
    });
    let ops = Arc::new(KafkaOps {
        factory: factory.clone(),
        dataflow: flow.clone(),
        services: Some(services.clone()),
        monitor: monitor.clone(),
    });

    let stage_shutdown = CancellationToken::new();
    let mut stages = JoinSet::new();
    let mut wirings = Vec::new();
    for name in STAGES.iter().filter(|s| components.iter().any(|c| c == *s)) {
        let max = config.max_in_flight.get(*name).copied().unwrap_or(64);
        let mut wiring = flow.wiring(name, max, config.drain_timeout);
        wiring.max_in_flight_bytes = config.stage_memory_bytes;
        wirings.push(wiring);
    }
    let broker_failed: Option<Box<dyn Fn() -> bool + Send + Sync>> = broker.clone().map(|b| {
        let f: Box<dyn Fn() -> bool + Send + Sync> = Box::new(move || b.has_failed());
        f
    });
    let health = ProcessHealth::new(
        wirings
            .iter()
            .map(|w| StageHealth {
                name: w.stage,
                group: w.group.clone(),
                probe: w.probe.clone(),
            })
            .collect(),
        producer.clone(),
        broker_failed,
    );
    for wiring in wirings {
        let name = wiring.stage;
        let stage: Arc<dyn Stage> = match name {
            "validate" => Arc::new(ValidateStage::new(services.clone())),
            "context" => Arc::new(ContextStage::new(services.clone())),
            "synthesize" => Arc::new(SynthesizeStage::new(services.clone())),
            "update" => Arc::new(UpdateStage::new(services.clone())),
            _ => Arc::new(RecordStage::new(services.clone())),
        };
        let (cc, producer, token) = (factory.consumer_config(), producer.clone(), stage_shutdown.clone());
        supervise_stage(
            &mut stages,
            name,
            processors::run_stage(wiring, cc, producer, stage, token.clone()),
            token,
            health.clone(),
        );
    }

    let ingest_shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let settings = ingest::IngestSettings {
        max_body_bytes: config.max_body_bytes,
        tolerance: config.webhook_signature_tolerance,
        admin_token: config.admin_token.clone(),
        viewer_token: config.viewer_token.clone(),
        tenant_rate_per_sec: config.tenant_rate_per_sec,
        produce_timeout: config.produce_timeout,
        webhooks_topic: flow.webhooks(),
        source_limits: config.source_limits.clone(),
    };
    let state = ingest::IngestState::new(
        TenantCache::with_negative_budget(store.clone(), TENANT_CACHE_TTL, config.unknown_tenant_cache_bytes),
        producer.clone(),
        settings,
        ops.clone(),
    );
    let checks: Arc<dyn ingest::ProcessChecks> = health.clone();
    let _ = state.process.set(checks);
    let (http_addr, ops_addr) = if runs_ingest {
        (Some(bound), None)
    } else {
        (None, Some(bound))
    };
    let ingest_state = Some(state.clone());
    let token = ingest_shutdown.clone();
    let ingest_task = Some(tokio::spawn(async move {
        let served = if runs_ingest {
            ingest::serve(listener, state, token).await
        } else {
            ingest::serve_ops(listener, state, token).await
        };
        if let Err(e) = served {
            error!(error = %e, "HTTP server stopped");
        }
    }));
    if let Some(m) = &monitor {
        m.spawn(background.clone());
    }
    trim_freed_memory(background.clone());
    let (fatal_tx, fatal) = tokio::sync::watch::channel(None);
    Watchdog::spawn(
        health.clone(),
        ops.clone(),
        Duration::from_secs(2),
        background.clone(),
        fatal_tx,
    );
    info!(components = ?components, bootstrap = %factory.bootstrap, http = ?http_addr, ops = ?ops_addr, "ticketflow running");
    Ok(Running {
        http_addr,
        ops_addr,
        bootstrap: factory.bootstrap.clone(),
        store,
        services,
        ops,
        stages,
        stage_shutdown,
        ingest_shutdown,
        ingest_state,
        ingest_task,
        background,
        producer,
        drain_timeout: config.drain_timeout,
        health,
        fatal,
        _broker: broker,
    })
}

impl Running {
    /// The process's producer (shared by ingest and the stages).
    pub fn producer(&self) -> Arc<processors::producer::DurableProducer> {
        self.producer.clone()
    }

    /// Resolves when the process cannot recover by itself (a stage task
    /// died, the broker stopped, the producer stays broken, a stage holds no
    /// partition for long while its group has lag): the reason.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Graceful stop: ingest answers 503, stages drain and commit, the
    /// producer flushes, then the server and broker stop.
    pub async fn stop(mut self) {
        info!("shutting down: ingest refuses new webhooks, stages drain");
        if let Some(s) = &self.ingest_state {
            s.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.stage_shutdown.cancel();
        let bound = self.drain_timeout + Duration::from_secs(5);
        if tokio::time::timeout(bound, async { while self.stages.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            warn!("stages did not stop within the drain bound; aborting them");
            self.stages.abort_all();
        }
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        self.background.cancel();
        self.ingest_shutdown.cancel();
        if let Some(t) = self.ingest_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        info!("stopped");
    }
}
