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
use sinks::store::{EmbeddedStore, Store, TenantCache};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::EmbeddedBroker;
use crate::config::Config;
use crate::dataflow::{Dataflow, STAGES};
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
    if let Some(nodes) = &config.scylla_nodes {
        bail!("SCYLLA_NODES={nodes} is set, but this build has only the embedded store (ScyllaDB support is a later issue); unset SCYLLA_NODES");
    }
    let store = EmbeddedStore::open(&config.store_path())
        .await
        .with_context(|| format!("opening store {}", config.store_path().display()))?;
    Ok(Arc::new(store))
}

pub fn services(config: &Config, store: Arc<dyn Store>) -> Arc<Services> {
    Arc::new(Services {
        tenants: TenantCache::new(store, TENANT_CACHE_TTL),
        sdp: SdpClient::new(Duration::from_secs(20)),
        llm: LlmClient::new(
            config.llm_base_url.clone(),
            config.llm_api_key.clone(),
            config.llm_model.clone(),
            Duration::from_secs(90),
        ),
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
            llm_timeout: Duration::from_secs(60),
        },
    })
}

/// A running Ticketflow process.
pub struct Running {
    /// Where ingest listens, when this process runs it.
    pub http_addr: Option<SocketAddr>,
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
    producer: rdkafka::producer::FutureProducer,
    drain_timeout: Duration,
    _broker: Option<EmbeddedBroker>,
}

/// Starts the broker (embedded when `KAFKA_BROKERS` is unset), creates the
/// topics, and starts the given components.
pub async fn start(config: &Config, components: &[String]) -> anyhow::Result<Running> {
    if let Some(url) = &config.schema_registry_url {
        bail!("SCHEMA_REGISTRY_URL={url} is set, but this build writes only Avro single-object encoding; unset SCHEMA_REGISTRY_URL");
    }
    let broker = match &config.kafka_brokers {
        None => Some(
            EmbeddedBroker::start(config.broker_addr, &config.data_dir)
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        Some(_) => None,
    };
    let factory = KafkaFactory::new(config.bootstrap_servers());
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
    let store = open_store(config).await?;
    let services = services(config, store.clone());
    let producer = factory.producer(Duration::from_secs(10)).context("creating producer")?;
    let ops = Arc::new(KafkaOps {
        factory: factory.clone(),
        dataflow: flow.clone(),
        services: Some(services.clone()),
    });

    let stage_shutdown = CancellationToken::new();
    let mut stages = JoinSet::new();
    for name in STAGES.iter().filter(|s| components.iter().any(|c| c == *s)) {
        let stage: Arc<dyn Stage> = match *name {
            "validate" => Arc::new(ValidateStage::new(services.clone())),
            "context" => Arc::new(ContextStage::new(services.clone())),
            "synthesize" => Arc::new(SynthesizeStage::new(services.clone())),
            "update" => Arc::new(UpdateStage::new(services.clone())),
            _ => Arc::new(RecordStage::new(services.clone())),
        };
        let max = config.max_in_flight.get(*name).copied().unwrap_or(64);
        let mut wiring = flow.wiring(name, max, config.drain_timeout);
        wiring.max_in_flight_bytes = config.stage_memory_bytes;
        let (cc, producer, token) = (factory.consumer_config(), producer.clone(), stage_shutdown.clone());
        let name = *name;
        stages.spawn(async move {
            if let Err(e) = processors::run_stage(wiring, cc, producer, stage, token).await {
                error!(stage = name, error = %e, "stage failed to start");
            }
        });
    }

    let ingest_shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let (mut http_addr, mut ingest_state, mut ingest_task) = (None, None, None);
    if components.iter().any(|c| c == "ingest") {
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding TICKETFLOW_HTTP_ADDR {}", config.http_addr))?;
        http_addr = Some(listener.local_addr()?);
        let settings = ingest::IngestSettings {
            max_body_bytes: config.max_body_bytes,
            tolerance: Duration::from_secs(300),
            admin_token: config.admin_token.clone(),
            tenant_rate_per_sec: config.tenant_rate_per_sec,
            produce_timeout: Duration::from_secs(10),
            webhooks_topic: flow.webhooks(),
        };
        let state = ingest::IngestState::new(
            TenantCache::new(store.clone(), TENANT_CACHE_TTL),
            producer.clone(),
            settings,
            ops.clone(),
        );
        ingest_state = Some(state.clone());
        let token = ingest_shutdown.clone();
        ingest_task = Some(tokio::spawn(async move {
            if let Err(e) = ingest::serve(listener, state, token).await {
                error!(error = %e, "ingest server stopped");
            }
        }));
        // Keep the lag gauges of /metrics fresh.
        let (ops, token) = (ops.clone(), background.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                }
                if let Err(e) = ops.lag_report().await {
                    warn!(error = %e, "lag refresh failed");
                }
            }
        });
    }
    info!(components = ?components, bootstrap = %factory.bootstrap, http = ?http_addr, "ticketflow running");
    Ok(Running {
        http_addr,
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
        _broker: broker,
    })
}

impl Running {
    /// Graceful stop: ingest answers 503, stages drain and commit, the
    /// producer flushes, then the server and broker stop.
    pub async fn stop(mut self) {
        use rdkafka::producer::Producer;
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
