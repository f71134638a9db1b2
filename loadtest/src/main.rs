//! Ticketflow's load-test harness.
//!
//! Starts Ticketflow in-process on loopback (embedded broker and store in a
//! temporary directory) with the SDP and LLM simulators, drives it with an
//! open-loop generator of signed webhooks, and accounts for every accepted
//! webhook: notes posted + DLQ records + skipped = accepted, with
//! duplicates and losses counted. Raw limits are measured in the same run
//! (plain rdkafka produce rate to the same broker; a trivial axum handler
//! hit by the same generator) so results are ratios.
//!
//! Scenarios: `ingest`, `pipeline`, `sdp-throttle`, `llm-outage`, `burst`,
//! `quality` (context-search quality on a labelled set, see [`quality`]),
//! `broker-restart` (the broker runs in a child process of the harness,
//! which is stopped mid-run — SIGTERM, or SIGKILL with `--broker-stop kill`
//! — and started again on the same address and data).
//! Reports: summary on stdout, `report.json` and `chart.svg` in `--out`.
//!
//! External mode (`--target-url`, see [`external`]): the same generator
//! and accounting against an already running deployment; the harness then
//! starts only the simulators, on addresses the deployment is configured
//! to call.

mod baseline;
mod external;
mod generator;
mod quality;
mod report;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use generator::{Outcome, Profile};
use serde_json::{json, Value};
use sinks::servicedesk::SdpAuth;
use sinks::sim::{Latency, LlmFault, LlmSimulator, SdpFault, SdpSimulator};
use sinks::store::HistoryStatus;
use topology::config::{parse_duration, Config};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadtest",
    about = "Load-test Ticketflow on loopback and account for every webhook"
)]
struct Args {
    /// ingest | pipeline | sdp-throttle | llm-outage | burst | broker-restart | backlog |
    /// quality (context-search recall@5 and MRR on a labelled set; no load, see quality.rs)
    #[arg(long, default_value = "pipeline")]
    scenario: String,
    /// Target webhooks per second (the base rate for burst; the end rate for --ramp-from).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Ramp linearly from this rate up to --rate.
    #[arg(long)]
    ramp_from: Option<f64>,
    /// Measured duration (after warm-up).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up at the same rate, excluded from the results.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Tenants the in-process rig creates (external mode: --tenant).
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// Distinct tickets; webhooks beyond the first for a ticket are request_updated events.
    #[arg(long, default_value_t = 100_000)]
    tickets: usize,
    /// Simulated LLM latency per call.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    llm_latency: Duration,
    /// Simulated SDP latency per call.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    sdp_latency: Duration,
    /// How long to wait for the pipeline to finish every accepted job; 0s
    /// skips the wait and the accounting (a backlog run measuring memory).
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    settle: Duration,
    /// Hard cap on webhooks sent.
    #[arg(long, default_value_t = 200_000)]
    max_requests: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// In-flight bound of the synthesize stage.
    #[arg(long, default_value_t = 1024)]
    synthesize_in_flight: usize,
    /// Also measure the raw limits (rdkafka produce, trivial axum) and closed-loop ingest.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    baselines: bool,
    /// Ingest only: step the rate up until p99 >= 50 ms; report the highest rate held.
    #[arg(long)]
    find_max: bool,
    /// Where report.json and chart.svg go.
    #[arg(long, default_value = "loadtest-out")]
    out: PathBuf,
    /// broker-restart: how long the broker stays down.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    broker_down: Duration,
    /// broker-restart: how the broker process is stopped: `term` (SIGTERM,
    /// a clean shutdown as in a rolling restart) or `kill` (SIGKILL, a crash).
    #[arg(long, default_value = "term", value_parser = ["term", "kill"])]
    broker_stop: String,
    /// Internal: run only the embedded broker on ADDR with data in DIR (the
    /// broker-restart scenario's child process).
    #[arg(long, num_args = 2, value_names = ["ADDR", "DIR"], hide = true)]
    serve_broker: Option<Vec<String>>,
    /// External mode: drive the Ticketflow already running at this base URL
    /// (its ingest, e.g. http://127.0.0.1:8080) instead of starting one
    /// in-process. Scenarios: ingest, pipeline, burst, sdp-throttle, llm-outage.
    #[arg(long)]
    target_url: Option<String>,
    /// External mode: the tenants to send webhooks for (repeatable or comma-separated).
    #[arg(long = "tenant", value_delimiter = ',')]
    tenant_ids: Vec<String>,
    /// External mode: each tenant's webhook secret (whsec_...), in the order of --tenant.
    #[arg(long = "webhook-secret", value_delimiter = ',')]
    webhook_secrets: Vec<String>,
    /// External mode, optional: each tenant's API bearer token, in the order
    /// of --tenant; lets the harness read the history of jobs that posted no
    /// note (skipped, failed). Without it those are not observed.
    #[arg(long = "api-token", value_delimiter = ',')]
    api_tokens: Vec<String>,
    /// External mode, optional: the deployment's TICKETFLOW_ADMIN_TOKEN; lets
    /// the harness read consumer lag and the DLQs. Without it those are not observed.
    #[arg(long)]
    admin_token: Option<String>,
    /// Where the SDP simulator listens; in external mode each tenant's
    /// --servicedesk-url must be http://<this>/app/<tenant_id>.
    #[arg(long, default_value = "127.0.0.1:0")]
    sdp_sim_addr: SocketAddr,
    /// Where the LLM simulator listens; in external mode the deployment's
    /// LLM_BASE_URL must be http://<this>/v1.
    #[arg(long, default_value = "127.0.0.1:0")]
    llm_sim_addr: SocketAddr,
    /// External mode: the token the SDP simulator accepts (the tenants' --servicedesk-token).
    #[arg(long, default_value = "loadtest-sdp-token")]
    sdp_token: String,
    /// External mode: the tenants' --servicedesk-auth.
    #[arg(long, default_value = "authtoken", value_parser = ["authtoken", "zoho"])]
    sdp_auth: String,
    /// Allow a --target-url, --sdp-sim-addr or --llm-sim-addr outside
    /// loopback (127.0.0.0/8, ::1). Load tests stay on loopback without it.
    #[arg(long)]
    allow_non_loopback: bool,
}

impl Args {
    fn external(&self) -> bool {
        self.target_url.is_some()
    }

    /// These arguments as report.json records them: secrets and tokens redacted.
    fn for_report(&self) -> String {
        let mut a = self.clone();
        let hide = |v: &mut Vec<String>| v.iter_mut().for_each(|s| *s = "<redacted>".into());
        hide(&mut a.webhook_secrets);
        hide(&mut a.api_tokens);
        if a.admin_token.is_some() {
            a.admin_token = Some("<redacted>".into());
        }
        format!("{a:?}")
    }

    /// Refuses external-mode arguments that cannot work, with a reason.
    fn check_external(&self) -> anyhow::Result<()> {
        let ext = self.external();
        if !ext {
            if !self.tenant_ids.is_empty()
                || !self.webhook_secrets.is_empty()
                || !self.api_tokens.is_empty()
                || self.admin_token.is_some()
            {
                bail!("--tenant, --webhook-secret, --api-token and --admin-token need --target-url");
            }
            return Ok(());
        }
        if !external::SCENARIOS.contains(&self.scenario.as_str()) {
            bail!(
                "scenario '{}' needs the in-process rig (it stops the broker or reads the rig's internals); with --target-url use one of {}",
                self.scenario,
                external::SCENARIOS.join(", ")
            );
        }
        if self.tenant_ids.is_empty() {
            bail!("--target-url needs at least one --tenant with its --webhook-secret");
        }
        if self.webhook_secrets.len() != self.tenant_ids.len() {
            bail!(
                "{} --tenant but {} --webhook-secret: give one secret per tenant, in the same order",
                self.tenant_ids.len(),
                self.webhook_secrets.len()
            );
        }
        if !self.api_tokens.is_empty() && self.api_tokens.len() != self.tenant_ids.len() {
            bail!(
                "{} --tenant but {} --api-token: give one token per tenant, in the same order",
                self.tenant_ids.len(),
                self.api_tokens.len()
            );
        }
        let unique: HashSet<&String> = self.tenant_ids.iter().collect();
        if unique.len() != self.tenant_ids.len() {
            bail!("--tenant lists a tenant twice");
        }
        for (t, s) in self.tenant_ids.iter().zip(&self.webhook_secrets) {
            topology::tenants::check_tenant_id(t).map_err(|e| anyhow::anyhow!("--tenant '{t}': {e}"))?;
            ingest::signature::secret_key(s).map_err(|e| anyhow::anyhow!("--webhook-secret of tenant '{t}': {e}"))?;
        }
        if self.tickets > EXTERNAL_MAX_TICKETS {
            bail!("--tickets is at most {EXTERNAL_MAX_TICKETS} with --target-url");
        }
        external::parse_target(self.target_url.as_deref().unwrap_or_default())?;
        Ok(())
    }
}

/// External mode: ticket ids are `<run start> * this + ticket`, new on
/// every run (a deployment skips a second request_created for a ticket).
const EXTERNAL_MAX_TICKETS: usize = 10_000_000;

const SCENARIOS: [&str; 8] = [
    "ingest",
    "pipeline",
    "sdp-throttle",
    "llm-outage",
    "burst",
    "broker-restart",
    "backlog",
    "quality",
];

/// The broker of the broker-restart scenario: this binary re-executed with
/// `--serve-broker`, so a restart is a real process kill and start.
struct BrokerProcess {
    addr: std::net::SocketAddr,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl BrokerProcess {
    async fn start(addr: std::net::SocketAddr, dir: PathBuf) -> anyhow::Result<Self> {
        let mut b = BrokerProcess { addr, dir, child: None };
        b.spawn().await?;
        Ok(b)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding the harness binary")?;
        let child = std::process::Command::new(exe)
            .arg("--serve-broker")
            .arg(self.addr.to_string())
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting the broker process")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("broker process exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("broker process did not listen on {} within 60 s", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// SIGKILL: no clean shutdown, as a crashed or evicted broker.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to 30 s, then SIGKILL): the broker shuts down
    /// cleanly.
    fn terminate(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve_broker(addr: &str, dir: &str) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = addr.parse().context("--serve-broker address")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let broker = topology::broker::EmbeddedBroker::start(addr, std::path::Path::new(dir))
            .await
            .map_err(anyhow::Error::msg)?;
        // Runs until SIGTERM (then stops cleanly) or SIGKILL.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        drop(broker);
        Ok(())
    })
}

/// Ticketflow started by the harness, in this process.
struct Local {
    running: topology::app::Running,
    /// The configuration `running` was started with.
    vars: HashMap<String, String>,
    /// The broker's own process (broker-restart), else embedded in `running`.
    broker: Option<tokio::sync::Mutex<BrokerProcess>>,
    _dir: tempfile::TempDir,
}

/// The system under test and the simulators it calls.
struct Rig {
    /// In-process Ticketflow; None in external mode (`--target-url`).
    local: Option<Local>,
    /// External mode: what can be read of the deployment through its API.
    api: Option<external::DeploymentApi>,
    sdp: SdpSimulator,
    llm: LlmSimulator,
    /// (tenant id, webhook secret)
    secrets: Vec<(String, String)>,
    http: reqwest::Client,
    base: String,
    /// Ticket ids are `ticket_base + ticket`.
    ticket_base: u64,
}

impl Rig {
    /// The in-process Ticketflow; only called where external mode was refused.
    fn running(&self) -> &topology::app::Running {
        &self.local.as_ref().expect("an in-process rig").running
    }

    fn broker(&self) -> Option<&tokio::sync::Mutex<BrokerProcess>> {
        self.local.as_ref()?.broker.as_ref()
    }

    /// History status of a job: from the store in-process, from the
    /// tenant API externally (None where not observed).
    async fn history_status(&self, tenant: &str, job: &str) -> anyhow::Result<Option<HistoryStatus>> {
        match (&self.local, &self.api) {
            (Some(l), _) => Ok(l.running.store.history_by_job(tenant, job).await?.map(|r| r.status)),
            (None, Some(api)) => Ok(api.history_status(tenant, job).await),
            (None, None) => Ok(None),
        }
    }

    fn observes_history(&self) -> bool {
        self.local.is_some() || self.api.as_ref().is_some_and(|a| a.observes_history())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn rig(args: &Args, components: &[&str]) -> anyhow::Result<Rig> {
    let dir = tempfile::tempdir()?;
    let broker_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let broker = if args.scenario == "broker-restart" {
        Some(BrokerProcess::start(broker_addr, dir.path().join("broker")).await?)
    } else {
        None
    };
    let (sdp, llm) = simulators(args).await?;
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("TICKETFLOW_DATA_DIR".into(), dir.path().display().to_string());
    vars.insert("TICKETFLOW_BROKER_ADDR".into(), broker_addr.to_string());
    if broker.is_some() {
        vars.insert("KAFKA_BROKERS".into(), broker_addr.to_string());
    }
    vars.insert("TICKETFLOW_HTTP_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("TICKETFLOW_OPS_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("TICKETFLOW_PARTITIONS".into(), args.partitions.to_string());
    vars.insert("TICKETFLOW_RETRY_TIERS".into(), "2s,5s,10s".into());
    vars.insert("TICKETFLOW_TENANT_RATE".into(), "100000".into());
    vars.insert(
        "TICKETFLOW_MAX_IN_FLIGHT_SYNTHESIZE".into(),
        args.synthesize_in_flight.to_string(),
    );
    vars.insert("LLM_BASE_URL".into(), llm.base_url());
    // Tuning from the environment (`KAFKA_PROPERTIES`, `TICKETFLOW_*` the
    // rig does not set itself) reaches the rig, to measure a setting.
    for (k, v) in std::env::vars() {
        if (k == "KAFKA_PROPERTIES" || k.starts_with("TICKETFLOW_")) && !vars.contains_key(&k) {
            vars.insert(k, v);
        }
    }
    let config = Config::from_map(&vars)?;
    let components: Vec<String> = components.iter().map(|c| c.to_string()).collect();
    let running = topology::app::start(&config, &components).await?;
    let base = format!("http://{}", running.http_addr.context("ingest address")?);
    let mut secrets = Vec::new();
    for t in 0..args.tenants {
        let id = format!("tenant{t}");
        let token = format!("token-{t}");
        sdp.add_portal(&id, if t % 2 == 0 { SdpAuth::Zoho } else { SdpAuth::AuthToken }, &token);
        let (secret, _) = topology::tenants::add(
            running.store.as_ref(),
            topology::tenants::AddTenant {
                tenant_id: id.clone(),
                servicedesk_url: sdp.base_url(&id),
                servicedesk_token: token,
                servicedesk_auth: if t % 2 == 0 { "zoho" } else { "authtoken" }.into(),
                webhook_secret: None,
                requests_per_minute: 100_000,
                events: vec!["request_created".into(), "request_updated".into()],
            },
        )
        .await
        .map_err(anyhow::Error::msg)?;
        secrets.push((id, secret));
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    Ok(Rig {
        local: Some(Local {
            running,
            vars,
            broker: broker.map(tokio::sync::Mutex::new),
            _dir: dir,
        }),
        api: None,
        sdp,
        llm,
        secrets,
        http,
        base,
        ticket_base: 100_000,
    })
}

/// The SDP and LLM simulators, on `--sdp-sim-addr` and `--llm-sim-addr`.
async fn simulators(args: &Args) -> anyhow::Result<(SdpSimulator, LlmSimulator)> {
    let sdp = SdpSimulator::start_on(args.sdp_sim_addr)
        .await
        .with_context(|| format!("starting the SDP simulator on {}", args.sdp_sim_addr))?;
    sdp.auto_create_requests(true);
    sdp.set_latency(Latency::fixed(args.sdp_latency));
    let llm = LlmSimulator::start_on(args.llm_sim_addr)
        .await
        .with_context(|| format!("starting the LLM simulator on {}", args.llm_sim_addr))?;
    llm.set_latency(Latency::fixed(args.llm_latency));
    Ok((sdp, llm))
}

/// External mode: the simulators (with a portal per tenant) and a checked
/// connection to the running deployment; no Ticketflow of its own.
async fn connect(args: &Args) -> anyhow::Result<Rig> {
    let url = external::parse_target(args.target_url.as_deref().unwrap_or_default())?;
    external::check_loopback(&url, args.allow_non_loopback).await?;
    let base = url.as_str().trim_end_matches('/').to_string();
    let http = external::client()?;
    let api_tokens: HashMap<String, String> = args
        .tenant_ids
        .iter()
        .cloned()
        .zip(args.api_tokens.iter().cloned())
        .collect();
    let api = external::DeploymentApi::connect(http.clone(), &base, args.admin_token.clone(), api_tokens).await?;
    let (sdp, llm) = simulators(args).await?;
    let auth = if args.sdp_auth == "zoho" {
        SdpAuth::Zoho
    } else {
        SdpAuth::AuthToken
    };
    for t in &args.tenant_ids {
        sdp.add_portal(t, auth, &args.sdp_token);
    }
    println!("external mode: target {base} · tenants {}", args.tenant_ids.join(", "));
    print!(
        "{}",
        external::setup_text(
            &args.tenant_ids,
            sdp.addr(),
            &llm.base_url(),
            &args.sdp_token,
            &args.sdp_auth
        )
    );
    println!(
        "observed: notes at the SDP simulator; history (skipped/failed) {}; lag and DLQ {}",
        if api.observes_history() {
            "via --api-token"
        } else {
            "not observed (no --api-token)"
        },
        if api.observes_admin() {
            "via --admin-token"
        } else {
            "not observed (no --admin-token)"
        }
    );
    // Ticket ids new to the deployment on every run (it skips a second
    // request_created for a ticket): the run's start in ms (mod ~3 years).
    let run_ms = (sinks::now_ms() as u64) % 100_000_000_000;
    Ok(Rig {
        local: None,
        api: Some(api),
        sdp,
        llm,
        secrets: args
            .tenant_ids
            .iter()
            .cloned()
            .zip(args.webhook_secrets.iter().cloned())
            .collect(),
        http,
        base,
        ticket_base: run_ms * EXTERNAL_MAX_TICKETS as u64,
    })
}

/// The rig of this run: in-process, or the deployment at --target-url.
async fn system(args: &Args, components: &[&str]) -> anyhow::Result<Rig> {
    if args.external() {
        connect(args).await
    } else {
        rig(args, components).await
    }
}

/// The i-th webhook: tenant, ticket, id and body.
fn webhook(i: usize, run: &str, tenants: usize, tickets: usize, ticket_base: u64) -> (usize, String, String, String) {
    let tenant = i % tenants;
    let ticket = (i / tenants) % tickets.max(1);
    let event = if i / tenants < tickets {
        "request_created"
    } else {
        "request_updated"
    };
    let body = json!({"event": event, "request": {
        "id": format!("{}", ticket_base + ticket as u64),
        "subject": format!("Users on floor {} cannot reach the VPN gateway 10.8.{}.{}", i % 9, i % 200, i % 250),
        "description": "Since 9:00 several users report that the VPN client disconnects every few minutes. Reconnecting works for a while. Laptops are on the latest client version.",
        "requester": {"name": "Load Generator", "email": "load@example.test"},
        "priority": "High", "category": "Network", "site": "HQ"
    }})
    .to_string();
    (
        tenant,
        format!("{}", ticket_base + ticket as u64),
        format!("lt-{run}-{i}"),
        body,
    )
}

async fn send_one(http: &reqwest::Client, base: &str, tenant: &str, secret: &str, id: &str, body: String) -> Outcome {
    let ts = sinks::now_ms() / 1000;
    let sig = match ingest::signature::sign(secret, id, ts, body.as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Error {
                class: format!("sign: {e}"),
            }
        }
    };
    let r = http
        .post(format!("{base}/webhooks/servicedesk/{tenant}"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) if r.status().as_u16() == 202 => match r.json::<Value>().await {
            Ok(v) => Outcome::Accepted {
                job_id: v["job_id"].as_str().unwrap_or_default().to_string(),
            },
            Err(_) => Outcome::Error {
                class: "bad_body".into(),
            },
        },
        Ok(r) => Outcome::Error {
            class: format!("http_{}", r.status().as_u16()),
        },
        Err(e) if e.is_timeout() => Outcome::Error {
            class: "timeout".into(),
        },
        Err(_) => Outcome::Error {
            class: "connect".into(),
        },
    }
}

struct Measured {
    result: generator::RunResult,
    run_id: String,
    warmup_count: usize,
    profile: Profile,
    lag: LagSampler,
}

/// One second's sample: total consumer lag and this process's RSS.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    lag: Option<i64>,
    rss_bytes: Option<u64>,
}

/// Samples total consumer lag and RSS once a second until stopped.
struct LagSampler {
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LagSampler {
    /// Stops sampling; once this returns the task has let go of the rig.
    async fn stop(&mut self) -> Vec<Sample> {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.samples.lock().expect("lag lock").clone()
    }
}

/// Records not yet consumed, summed over every stage group (None when the
/// broker does not answer, or externally without --admin-token).
async fn total_lag(rig: &Rig) -> Option<i64> {
    let Some(local) = &rig.local else {
        return rig.api.as_ref()?.total_lag().await;
    };
    let v = local.running.ops.lag_counts().await.ok()?;
    Some(
        v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["total_lag"].as_i64())
            .sum(),
    )
}

/// Resident set size of this process (Linux `/proc/self/status`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn drive(rig: &Arc<Rig>, args: &Args, profile: Profile, sample_lag: bool) -> Measured {
    let total = args.warmup + args.duration;
    let schedule = profile.schedule(total, args.max_requests);
    let warmup_count = schedule.iter().filter(|t| **t < args.warmup).count();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (tenants, tickets, ticket_base) = (rig.secrets.len(), args.tickets, rig.ticket_base);
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Externally, lag comes from the admin API (which also reads the age of
    // the oldest record): every 5 s, and only with --admin-token. This
    // process's RSS is the deployment's only in-process.
    let local = rig.local.is_some();
    let sample_lag = sample_lag && (local || rig.api.as_ref().is_some_and(|a| a.observes_admin()));
    let every = Duration::from_secs(if local { 1 } else { 5 });
    let task = sample_lag.then(|| {
        let (rig, samples) = (rig.clone(), samples.clone());
        // Bounded: never samples past the run plus the settle time.
        let until = Instant::now() + total + args.settle;
        tokio::spawn(async move {
            let start = Instant::now();
            while Instant::now() < until {
                let lag = total_lag(&rig).await;
                samples.lock().expect("lag lock").push(Sample {
                    at: start.elapsed(),
                    lag,
                    rss_bytes: if local { rss_bytes() } else { None },
                });
                tokio::time::sleep(every).await;
            }
        })
    });
    let r = rig.clone();
    let run = run_id.clone();
    let result = generator::run(&schedule, 20_000, Duration::from_secs(30), move |i| {
        let r = r.clone();
        let (t, _ticket, id, body) = webhook(i, &run, tenants, tickets, ticket_base);
        async move {
            let (tenant, secret) = &r.secrets[t];
            send_one(&r.http, &r.base, tenant, secret, &id, body).await
        }
    })
    .await;
    Measured {
        result,
        run_id,
        warmup_count,
        profile,
        lag: LagSampler { samples, task },
    }
}

/// Ingest latency and rate over the measured part of a run.
/// Webhooks per block of a soak's per-block latency report.
const SOAK_BLOCK: usize = 100_000;

/// Latency and errors per `block` webhooks after the warm-up, in send order.
fn per_block(samples: &[generator::Sample], warmup: usize, block: usize) -> Vec<Value> {
    let measured: Vec<&generator::Sample> = samples.iter().filter(|s| s.index >= warmup).collect();
    measured
        .chunks(block)
        .map(|chunk| {
            let mut h = generator::histogram();
            let mut errors = 0u64;
            for s in chunk {
                match s.outcome {
                    Outcome::Accepted { .. } => {
                        let _ = h.record(s.latency.as_micros().max(1) as u64);
                    }
                    Outcome::Error { .. } => errors += 1,
                }
            }
            let (first, last) = (chunk[0].index - warmup, chunk[chunk.len() - 1].index - warmup);
            json!({"from": first, "to": last + 1, "latency": report::summary(&h), "errors": errors})
        })
        .collect()
}

fn ingest_stats(m: &Measured, args: &Args) -> (Value, BTreeMap<String, u64>, Vec<report::Second>, usize) {
    let mut h = generator::histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let secs = (args.warmup + args.duration).as_secs() as usize + 1;
    let mut per_sec: Vec<(report::Second, hdrhistogram::Histogram<u64>)> = (0..secs)
        .map(|_| (report::Second::default(), generator::histogram()))
        .collect();
    let mut accepted = 0;
    for s in &m.result.samples {
        let sec = (s.intended.as_secs() as usize).min(secs - 1);
        per_sec[sec].0.sent += 1;
        let _ = per_sec[sec].1.record(s.latency.as_micros().max(1) as u64);
        let measured = s.index >= m.warmup_count;
        match &s.outcome {
            Outcome::Accepted { .. } => {
                per_sec[sec].0.accepted += 1;
                if measured {
                    accepted += 1;
                    let _ = h.record(s.latency.as_micros().max(1) as u64);
                }
            }
            Outcome::Error { class } => {
                per_sec[sec].0.errors += 1;
                if measured {
                    *errors.entry(class.clone()).or_default() += 1;
                }
            }
        }
    }
    if m.result.not_sent > 0 {
        errors.insert("not_sent_generator_bound".into(), m.result.not_sent as u64);
    }
    let timeline = per_sec
        .into_iter()
        .enumerate()
        .map(|(i, (mut s, hh))| {
            s.target = m
                .profile
                .rate_at(Duration::from_secs(i as u64), args.warmup + args.duration);
            if !hh.is_empty() {
                s.p50_ms = hh.value_at_quantile(0.5) as f64 / 1000.0;
                s.p99_ms = hh.value_at_quantile(0.99) as f64 / 1000.0;
            }
            s
        })
        .collect();
    (report::summary(&h), errors, timeline, accepted)
}

/// The job ids named by notes (each note ends with its job's marker).
fn noted_jobs(notes: &[sinks::sim::RecordedNote]) -> std::collections::HashSet<String> {
    notes
        .iter()
        .filter_map(|n| job_of_note(&n.description))
        .map(str::to_string)
        .collect()
}

fn job_of_note(description: &str) -> Option<&str> {
    let pos = description.find("Ticketflow job ")?;
    Some(description[pos + 15..].split('<').next().unwrap_or("").trim())
}

/// Waits for the pipeline, then checks every accepted webhook ended as
/// exactly one note, a DLQ record, or a skipped history row.
async fn account(
    rig: &Rig,
    m: &Measured,
    settle: Duration,
) -> anyhow::Result<(Value, hdrhistogram::Histogram<u64>, f64, Vec<(Duration, f64)>)> {
    let accepted: Vec<(&str, String, Duration)> = m
        .result
        .samples
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Accepted { job_id } => Some((
                rig.secrets[s.index % rig.secrets.len()].0.as_str(),
                job_id.clone(),
                s.intended,
            )),
            _ => None,
        })
        .collect();
    // Waiting must not load what it measures: a job with a note is done
    // (read from the simulator's memory every second); the store, which the
    // stages share, is asked only about jobs without a note, every 10 s,
    // oldest first, and a scan stops at the first job with no history yet
    // (the ones after it are most likely still running too): asking about
    // all 100,000 open jobs of a backlog every 10 s took a third of the
    // store's time from the stages. At most 200 jobs a scan externally
    // (through the tenant API, only with --api-token), 1,000 in process.
    let observes_history = rig.observes_history();
    let per_scan = if rig.local.is_some() { 1_000 } else { 200 };
    let deadline = Instant::now() + settle;
    let mut finished: HashMap<String, HistoryStatus> = HashMap::new();
    let mut next_store_scan = Instant::now() + Duration::from_secs(10);
    // Job ids of the notes seen so far, read incrementally.
    let mut noted: HashSet<String> = HashSet::new();
    let mut notes_read = 0;
    loop {
        let new_notes = rig.sdp.notes_from(notes_read);
        notes_read += new_notes.len();
        noted.extend(noted_jobs(&new_notes));
        let open: Vec<&(&str, String, Duration)> = accepted
            .iter()
            .filter(|(_, job, _)| !noted.contains(job.as_str()) && !finished.contains_key(job))
            .collect();
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        if observes_history && Instant::now() >= next_store_scan {
            for (tenant, job, _) in open.into_iter().take(per_scan) {
                match rig.history_status(tenant, job).await? {
                    Some(status) => {
                        finished.insert(job.clone(), status);
                    }
                    None => break,
                }
            }
            next_store_scan = Instant::now() + Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Jobs without a note: their history row says skipped, failed or nothing.
    noted.extend(noted_jobs(&rig.sdp.notes_from(notes_read)));
    if observes_history {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let last: Vec<(String, Option<HistoryStatus>)> =
            stream::iter(
                accepted
                    .iter()
                    .filter(|(_, job, _)| !finished.contains_key(job) && !noted.contains(job.as_str())),
            )
            .map(|(tenant, job, _)| async move {
                Ok::<_, anyhow::Error>((job.clone(), rig.history_status(tenant, job).await?))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        for (job, status) in last {
            if let Some(status) = status {
                finished.insert(job, status);
            }
        }
    }
    let notes = rig.sdp.notes();
    let mut by_job: HashMap<&str, Vec<&sinks::sim::RecordedNote>> = HashMap::new();
    for n in &notes {
        if let Some(job) = job_of_note(&n.description) {
            by_job.entry(job).or_default().push(n);
        }
    }
    let dlq: Option<u64> = match (&rig.local, &rig.api) {
        (Some(local), _) => {
            let mut dlq = 0;
            for stage in topology::dataflow::STAGES {
                let v = local
                    .running
                    .ops
                    .dlq_records(stage, usize::MAX)
                    .await
                    .map_err(anyhow::Error::msg)?;
                dlq += v["count"].as_u64().unwrap_or(0);
            }
            Some(dlq)
        }
        (None, Some(api)) => {
            let jobs: HashSet<&str> = accepted.iter().map(|(_, j, _)| j.as_str()).collect();
            api.dlq_records_of(&jobs).await
        }
        (None, None) => None,
    };
    let (mut noted, mut duplicates, mut skipped, mut failed, mut lost) = (0u64, 0u64, 0u64, 0u64, 0u64);
    // History says a note was written, yet none reached the simulator: in
    // external mode, a tenant whose --servicedesk-url is not the simulator.
    let mut noted_elsewhere = 0u64;
    let mut e2e = generator::histogram();
    let mut e2e_per_sec: Vec<(Duration, f64)> = Vec::new();
    let start_ms = sinks::now_ms() - m.result.started.elapsed().as_millis() as i64;
    let mut last_note_ms = start_ms;
    for (_, job, intended) in &accepted {
        let status = finished.get(job);
        match by_job.get(job.as_str()) {
            Some(list) => {
                noted += 1;
                duplicates += list.len() as u64 - 1;
                let sent_ms = start_ms + intended.as_millis() as i64;
                let lat = (list[0].at_ms - sent_ms).max(0) as u64;
                last_note_ms = last_note_ms.max(list[0].at_ms);
                let _ = e2e.record((lat * 1000).max(1));
                e2e_per_sec.push((*intended, lat as f64));
            }
            None => match status {
                Some(HistoryStatus::Skipped) => skipped += 1,
                Some(HistoryStatus::Failed) => failed += 1,
                Some(HistoryStatus::Success | HistoryStatus::Fallback) => {
                    noted_elsewhere += 1;
                    lost += 1;
                }
                None => lost += 1,
            },
        }
    }
    let span = ((last_note_ms - start_ms) as f64 / 1000.0).max(1e-3);
    let jobs_per_sec = noted as f64 / span;
    // What was not observed is null, never a 0 that reads as "none".
    let seen = |n: u64| if observes_history { json!(n) } else { Value::Null };
    let mut accounting = json!({
        "accepted": accepted.len(), "notes": noted, "duplicates": duplicates, "skipped": seen(skipped),
        "failed_in_history": seen(failed), "dlq_records": dlq, "lost": lost,
        "balanced": noted + skipped + failed == accepted.len() as u64 && duplicates == 0 && lost == 0,
        "llm_requests": rig.llm.requests(),
        "observed": {"notes": true, "history": observes_history, "dlq": dlq.is_some()},
    });
    if noted_elsewhere > 0 {
        accounting["history_noted_but_no_note_at_simulator"] = json!(noted_elsewhere);
    }
    if !observes_history {
        accounting["lost_means"] =
            json!("accepted without a note at the SDP simulator; skipped and failed jobs count here (history not observed: give --api-token)");
    }
    Ok((accounting, e2e, jobs_per_sec, e2e_per_sec))
}

async fn find_max(args: &Args) -> anyhow::Result<()> {
    let rig = Arc::new(system(args, &["ingest"]).await?);
    let mut rate = args.ramp_from.unwrap_or(100.0);
    let mut best: Option<(f64, Value)> = None;
    let mut steps = Vec::new();
    while rate <= args.rate {
        let m = drive(&rig, args, Profile::Constant { rate }, false).await;
        let (lat, errors, _, accepted) = ingest_stats(&m, args);
        let p99 = lat["p99_ms"].as_f64().unwrap_or(f64::MAX);
        let achieved = accepted as f64 / args.duration.as_secs_f64();
        println!(
            "rate {rate:>7.0}/s: achieved {achieved:>7.0}/s p99 {p99:>7.2} ms errors {}",
            report::classes(&errors)
        );
        steps.push(json!({"target_rate": rate, "achieved_rate": achieved, "latency": lat, "errors": errors}));
        if p99 >= 50.0 || !errors.is_empty() || achieved < rate * 0.95 {
            break;
        }
        best = Some((rate, lat));
        rate *= 1.5;
    }
    let baselines = if args.baselines && rig.local.is_some() {
        Some(baseline::measure(&rig.running().bootstrap, &rig.http, args.warmup).await?)
    } else {
        if args.baselines {
            println!("raw limits: not measured against an external deployment (its broker is not the harness's)");
        }
        None
    };
    let held = best.as_ref().map(|(r, _)| *r);
    println!(
        "highest ingest rate held with p99 < 50 ms: {}",
        held.map(|r| format!("{r:.0}/s")).unwrap_or("none".into())
    );
    if let (Some(r), Some(b)) = (held, &baselines) {
        println!(
            "  = {:.1}% of the raw rdkafka produce rate ({:.0}/s) and {:.1}% of a trivial axum handler ({:.0}/s)",
            r / b["raw_produce_per_sec"].as_f64().unwrap_or(1.0) * 100.0,
            b["raw_produce_per_sec"],
            r / b["trivial_axum_per_sec"].as_f64().unwrap_or(1.0) * 100.0,
            b["trivial_axum_per_sec"]
        );
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(
            &json!({"scenario": "ingest", "find_max": true, "highest_rate_p99_under_50ms": held, "steps": steps, "baselines": baselines}),
        )?,
    )?;
    Ok(())
}

/// Stops the pipeline before the broker goes (a consumer closed after its
/// broker would wait on it); every task holding the rig must have ended.
async fn stop_rig(rig: Arc<Rig>) {
    match Arc::try_unwrap(rig) {
        Ok(Rig { local: Some(l), .. }) => l.running.stop().await,
        // External: the deployment keeps running; the simulators stop here.
        Ok(_) => {}
        Err(_) => eprintln!("the rig is still shared; stopping without draining the stages"),
    }
}

/// backlog: webhooks are queued with ingest alone; then the five stages
/// start in this process and work through the backlog with the LLM at
/// `--llm-latency`, for `--settle`. The RSS they add while the backlog is
/// deep is the stage runtime's memory under load (bounded by the in-flight
/// limits and librdkafka's 16 MiB prefetch per stage, not by the backlog).
async fn backlog(args: &Args) -> anyhow::Result<()> {
    let rig = Arc::new(rig(args, &["ingest"]).await?);
    println!(
        "backlog: queueing at {:.0}/s for {:.0} s with ingest alone",
        args.rate,
        args.duration.as_secs_f64()
    );
    let m = drive(&rig, args, Profile::Constant { rate: args.rate }, false).await;
    let (lat, errors, _, _) = ingest_stats(&m, args);
    let queued = m
        .result
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Accepted { .. }))
        .count();
    println!(
        "queued {queued} webhooks (ingest p99 {} ms, errors: {})",
        lat["p99_ms"],
        report::classes(&errors)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_bytes().unwrap_or(0);
    let mut vars = rig.local.as_ref().expect("an in-process rig").vars.clone();
    vars.insert("KAFKA_BROKERS".into(), rig.running().bootstrap.clone());
    let stages: Vec<String> = topology::dataflow::STAGES.iter().map(|s| s.to_string()).collect();
    let running = topology::app::start(&Config::from_map(&vars)?, &stages).await?;
    let started = Instant::now();
    // RSS and lag sampled every second while the accounting waits for every
    // queued job's note (or the --settle deadline).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (rig, stop) = (rig.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut peak, mut samples) = (before, Vec::new());
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let rss = rss_bytes().unwrap_or(0);
                peak = peak.max(rss);
                let lag = total_lag(&rig).await;
                samples
                    .push(json!({"t": started.elapsed().as_secs_f64(), "rss_mib": rss as f64 / 1048576.0, "lag": lag}));
                if samples.len() % 30 == 0 {
                    println!(
                        "  {:.0} s: lag {lag:?}, RSS {:.0} MiB",
                        started.elapsed().as_secs_f64(),
                        rss as f64 / 1048576.0
                    );
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return (peak, samples);
                }
            }
        })
    };
    let (accounting, e2e, _, _) = account(&rig, &m, args.settle).await?;
    let drained_s = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (peak, samples) = sampler.await?;
    let notes = accounting["notes"].as_u64().unwrap_or(0);
    let balanced = accounting["balanced"].as_bool().unwrap_or(false);
    let mib = |b: u64| b as f64 / 1048576.0;
    // The simulator shares the process: what it holds is not the stages'.
    // Measured by letting it forget its traffic once the accounting is done
    // (the process hands freed memory back every 10 s).
    let sim_notes = rig.sdp.note_bytes_held() as u64;
    let rss_drained = rss_bytes().unwrap_or(0);
    rig.sdp.forget_traffic();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_forgotten = rss_bytes().unwrap_or(0);
    let sim_held = rss_drained.saturating_sub(rss_forgotten);
    println!(
        "stages worked {drained_s:.0} s on the backlog: {notes} notes for {queued} queued ({:.1} jobs/s); process RSS {:.0} MiB before the stages, peak {:.0} MiB: {:.0} MiB more. After the drain {:.0} MiB; {:.0} MiB once the SDP simulator forgot its traffic ({:.0} MiB of it note text): the simulator held {:.0} MiB",
        notes as f64 / drained_s.max(0.001),
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(rss_drained),
        mib(rss_forgotten),
        mib(sim_notes),
        mib(sim_held)
    );
    println!("accounting: {accounting}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(
            &json!({"scenario": "backlog", "args": args.for_report(), "queued": queued,
            "ingest_latency": lat, "ingest_errors": errors, "accounting": accounting,
            "drain_seconds": drained_s, "jobs_per_sec": notes as f64 / drained_s.max(0.001),
            "e2e_latency": report::summary(&e2e),
            "rss_before_stages_mib": mib(before), "rss_peak_mib": mib(peak),
            "stages_added_mib": mib(peak.saturating_sub(before)), "simulator_note_text_mib": mib(sim_notes), "rss_after_drain_mib": mib(rss_drained), "rss_after_simulator_forgot_mib": mib(rss_forgotten), "simulator_held_mib": mib(sim_held), "samples": samples}),
        )?,
    )?;
    running.stop().await;
    stop_rig(rig).await;
    if !balanced {
        bail!("accounting does not balance: see report.json");
    }
    Ok(())
}

async fn scenario(args: &Args) -> anyhow::Result<()> {
    let ingest_only = args.scenario == "ingest";
    let components: Vec<&str> = if ingest_only {
        vec!["ingest"]
    } else {
        topology::app::COMPONENTS.to_vec()
    };
    let rig = Arc::new(system(args, &components).await?);
    let total = args.warmup + args.duration;
    let profile = match (args.scenario.as_str(), args.ramp_from) {
        ("burst", _) => Profile::Burst {
            rate: args.rate,
            factor: 10.0,
            at: args.warmup + args.duration / 3,
            len: Duration::from_secs(10).min(args.duration / 2),
        },
        (_, Some(from)) => Profile::Ramp { from, to: args.rate },
        _ => Profile::Constant { rate: args.rate },
    };
    // Fault injection running beside the generator; holds the rig.
    let mut injector: Option<tokio::task::JoinHandle<()>> = None;
    match args.scenario.as_str() {
        "llm-outage" => rig.llm.set_fault(Some(LlmFault::Status {
            status: 503,
            retry_after_secs: Some(30),
        })),
        "sdp-throttle" => {
            for (t, _) in &rig.secrets {
                rig.sdp
                    .set_fault(t, Some(SdpFault::RateLimited { retry_after_secs: 5 }));
            }
            // Throttled for the first 30 s (or a third of the run), then recovered.
            let (rig2, hold) = (rig.clone(), Duration::from_secs(30).min(total / 3));
            injector = Some(tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                for (t, _) in &rig2.secrets {
                    rig2.sdp.set_fault(t, None);
                }
            }));
        }
        "broker-restart" => {
            // Killed a third into the measured run, down for --broker-down.
            let (rig2, at, down) = (rig.clone(), args.warmup + args.duration / 3, args.broker_down);
            let graceful = args.broker_stop == "term";
            injector = Some(tokio::spawn(async move {
                tokio::time::sleep(at).await;
                let Some(b) = rig2.broker() else { return };
                let mut b = b.lock().await;
                if graceful {
                    tokio::task::block_in_place(|| b.terminate());
                    println!("broker process stopped (SIGTERM) at {:.1} s", at.as_secs_f64());
                } else {
                    b.kill();
                    println!("broker process killed (SIGKILL) at {:.1} s", at.as_secs_f64());
                }
                tokio::time::sleep(down).await;
                match b.spawn().await {
                    Ok(()) => println!("broker process started again after {:.1} s down", down.as_secs_f64()),
                    Err(e) => eprintln!("BROKER RESTART FAILED: {e:#}"),
                }
            }));
        }
        _ => {}
    }
    println!(
        "scenario {} · {:?} · {:.0} s + {:.0} s warm-up · {} tenants · LLM {} ms · SDP {} ms",
        args.scenario,
        profile,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        rig.secrets.len(),
        args.llm_latency.as_millis(),
        args.sdp_latency.as_millis()
    );
    // External ingest accounting: records the webhooks topic gained (admin API).
    let records_before = match &rig.api {
        Some(api) if ingest_only => api.webhook_records().await,
        _ => None,
    };
    let mut m = drive(&rig, args, profile, !ingest_only).await;
    let (lat, errors, mut timeline, accepted) = ingest_stats(&m, args);
    let measured_count = m.result.samples.len() + m.result.not_sent - m.warmup_count;
    let target_rate = measured_count as f64 / args.duration.as_secs_f64();
    let achieved = accepted as f64 / args.duration.as_secs_f64();
    println!("ingest: target {target_rate:.1}/s achieved {achieved:.1}/s · latency from intended send: p50 {} p90 {} p99 {} p99.9 {} max {} ms · errors: {}", lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["p999_ms"], lat["max_ms"], report::classes(&errors));

    let mut out = json!({"scenario": args.scenario, "target": if rig.local.is_some() { "in-process" } else { rig.base.as_str() }, "args": args.for_report(), "send_wall_seconds": m.result.wall.as_secs_f64(), "ingest": {"target_rate": target_rate, "achieved_rate": achieved, "latency": lat, "errors": errors, "warmup_excluded": m.warmup_count}});
    // A soak (more than one block sent): latency per block of webhooks, in
    // send order, to show whether it drifts over the run.
    let blocks = per_block(&m.result.samples, m.warmup_count, SOAK_BLOCK);
    if blocks.len() > 1 {
        for b in &blocks {
            println!(
                "  webhooks {}..{}: p50 {} p99 {} max {} ms · errors {}",
                b["from"], b["to"], b["latency"]["p50_ms"], b["latency"]["p99_ms"], b["latency"]["max_ms"], b["errors"]
            );
        }
        out["ingest"]["per_block"] = json!(blocks);
    }
    let total_accepted = m
        .result
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Accepted { .. }))
        .count() as i64;
    if ingest_only && rig.local.is_none() {
        // Every accepted webhook is a record on the webhooks topic, once:
        // what the topic gained over the run, if the admin API is readable.
        let after = match &rig.api {
            Some(api) if records_before.is_some() => api.webhook_records().await,
            _ => None,
        };
        match (records_before, after) {
            (Some(before), Some(after)) => {
                let records = after - before;
                println!(
                    "accounting: {total_accepted} accepted, {records} records added to the webhooks topic ({} lost, {} duplicates; other traffic to the deployment during the run counts as duplicates)",
                    (total_accepted - records).max(0),
                    (records - total_accepted).max(0)
                );
                out["accounting"] = json!({"accepted": total_accepted, "records": records, "lost": (total_accepted - records).max(0), "duplicates": (records - total_accepted).max(0), "observed": true});
            }
            _ => {
                println!("accounting: {total_accepted} accepted; records on the webhooks topic not observed (give --admin-token)");
                out["accounting"] = json!({"accepted": total_accepted, "records": null, "lost": null, "duplicates": null, "observed": false});
            }
        }
    } else if ingest_only {
        // Every accepted webhook is a record on the webhooks topic, once.
        let v = rig.running().ops.lag_report().await.map_err(anyhow::Error::msg)?;
        let records: i64 = v["groups"][0]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["topic"] == "ticketflow.webhooks")
            .filter_map(|p| p["high"].as_i64())
            .sum();
        println!(
            "accounting: {total_accepted} accepted, {records} records on ticketflow.webhooks ({} lost, {} duplicates)",
            (total_accepted - records).max(0),
            (records - total_accepted).max(0)
        );
        out["accounting"] = json!({"accepted": total_accepted, "records": records, "lost": (total_accepted - records).max(0), "duplicates": (records - total_accepted).max(0)});
    } else {
        // --settle 0s: a backlog run (memory under load); the queue is left
        // unfinished, so there is nothing to account for and no e2e latency.
        let (acc, e2e_sum, jobs_per_sec) = if args.settle.is_zero() {
            println!("accounting skipped (--settle 0s): the backlog is left unfinished");
            (json!({"skipped": "settle 0s"}), Value::Null, Value::Null)
        } else {
            let (acc, e2e, jobs_per_sec, e2e_points) = account(&rig, &m, args.settle).await?;
            let e2e_sum = report::summary(&e2e);
            println!(
                "pipeline: {jobs_per_sec:.1} jobs/s · end-to-end (intended send → note): p50 {} p95 {} p99 {} max {} ms",
                e2e_sum["p50_ms"], e2e_sum["p95_ms"], e2e_sum["p99_ms"], e2e_sum["max_ms"]
            );
            println!("accounting: {acc}");
            for (t, ms) in e2e_points {
                if let Some(s) = timeline.get_mut(t.as_secs() as usize) {
                    s.e2e_max_ms = Some(s.e2e_max_ms.map_or(ms, |v| v.max(ms)));
                }
            }
            (acc, e2e_sum, json!(jobs_per_sec))
        };
        let samples = m.lag.stop().await;
        for s in &samples {
            let sec = s.at.as_secs() as usize;
            while timeline.len() <= sec {
                timeline.push(report::Second::default());
            }
            timeline[sec].lag = s.lag;
        }
        let max_lag = samples.iter().filter_map(|s| s.lag).max();
        let peak_rss_mib = samples
            .iter()
            .filter_map(|s| s.rss_bytes)
            .max()
            .map(|b| b as f64 / 1048576.0);
        if rig.local.is_some() {
            println!(
                "backlog and memory: consumer lag peaked at {} records; this process (broker, ingest, all five stages, simulators, generator) peaked at {:.0} MiB RSS",
                max_lag.unwrap_or(0),
                peak_rss_mib.unwrap_or(0.0)
            );
        } else {
            let lag = match max_lag {
                Some(l) => format!("peaked at {l} records"),
                None if rig.api.as_ref().is_some_and(|a| a.observes_admin()) => {
                    "not observed (no answer from GET /api/v1/lag within the run; it reads the oldest record of every lagging partition)".into()
                }
                None => "not observed (give --admin-token)".into(),
            };
            println!("backlog: consumer lag {lag} · the deployment's memory is not observed (another process)");
            if rig.sdp.calls() == 0 {
                eprintln!(
                    "the SDP simulator received no call: are the tenants' --servicedesk-url set to http://{}/app/<tenant_id>?",
                    rig.sdp.addr()
                );
            } else if rig.llm.requests() == 0 {
                eprintln!(
                    "the LLM simulator received no request: is the deployment's LLM_BASE_URL {}?",
                    rig.llm.base_url()
                );
            }
        }
        out["pipeline"] = json!({"jobs_per_sec": jobs_per_sec, "e2e_latency": e2e_sum, "accounting": acc,
            "max_lag": max_lag, "peak_rss_mib": peak_rss_mib,
            "samples": samples.iter().map(|s| json!({"t": s.at.as_secs_f64(), "lag": s.lag, "rss_mib": s.rss_bytes.map(|b| b as f64 / 1048576.0)})).collect::<Vec<_>>()});
        if acc["balanced"] == json!(false) {
            eprintln!("ACCOUNTING FAILED: {acc}");
        }
    }
    if args.baselines && rig.local.is_none() {
        println!("raw limits: not measured against an external deployment (its broker is not the harness's)");
    } else if args.baselines {
        let b = baseline::measure(&rig.running().bootstrap, &rig.http, args.warmup).await?;
        let ingest_max = baseline::ingest_closed_loop(&rig.http, &rig.base, &rig.secrets, Duration::from_secs(5)).await;
        println!(
            "raw limits: rdkafka produce {:.0}/s · trivial axum {:.0}/s · ingest closed-loop {ingest_max:.0}/s = {:.1}% of produce, {:.1}% of axum",
            b["raw_produce_per_sec"].as_f64().unwrap_or(0.0),
            b["trivial_axum_per_sec"].as_f64().unwrap_or(0.0),
            ingest_max / b["raw_produce_per_sec"].as_f64().unwrap_or(1.0) * 100.0,
            ingest_max / b["trivial_axum_per_sec"].as_f64().unwrap_or(1.0) * 100.0
        );
        out["baselines"] = b;
        out["baselines"]["ingest_closed_loop_per_sec"] = json!(ingest_max);
    }
    out["timeline"] = report::timeline_json(&timeline);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("report.json"), serde_json::to_string_pretty(&out)?)?;
    std::fs::write(
        args.out.join("chart.svg"),
        report::chart_svg(
            &format!(
                "ticketflow loadtest: {} ({} run {})",
                args.scenario,
                report::secs(total),
                m.run_id
            ),
            &timeline,
        ),
    )?;
    println!(
        "report: {}/report.json · chart: {}/chart.svg",
        args.out.display(),
        args.out.display()
    );
    let balanced = out["pipeline"]["accounting"]["balanced"].as_bool().unwrap_or(true)
        && out["accounting"]["lost"].as_i64().unwrap_or(0) == 0;
    if let Some(t) = injector {
        t.abort();
        let _ = t.await;
    }
    let _ = m.lag.stop().await;
    stop_rig(rig).await;
    if !balanced {
        bail!("accounting does not balance: see report.json");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(v) = &args.serve_broker {
        return serve_broker(&v[0], &v[1]);
    }
    if !SCENARIOS.contains(&args.scenario.as_str()) {
        bail!("unknown scenario '{}': one of {}", args.scenario, SCENARIOS.join(", "));
    }
    if args.rate <= 0.0 || args.rate > 100_000.0 {
        bail!("--rate must be in (0, 100000]");
    }
    if args.duration > Duration::from_secs(3600) {
        bail!("--duration is at most 1h");
    }
    args.check_external()?;
    external::check_sim_addr("--sdp-sim-addr", args.sdp_sim_addr, args.allow_non_loopback)?;
    external::check_sim_addr("--llm-sim-addr", args.llm_sim_addr, args.allow_non_loopback)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(4),
        )
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        if args.scenario == "quality" {
            quality::run(&args.out).await
        } else if args.find_max {
            find_max(&args).await
        } else if args.scenario == "backlog" {
            backlog(&args).await
        } else {
            scenario(&args).await
        }
    });
    // Whatever is left (librdkafka closing) gets a bound, not a hang.
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soak_blocks_cover_the_measured_webhooks_in_send_order() {
        // 2 warm-up webhooks, then 25 measured: blocks of 10, 10 and 5; the
        // slow one is in the second block, the error in the third.
        let samples: Vec<generator::Sample> = (0..27)
            .map(|i| generator::Sample {
                index: i,
                intended: Duration::from_millis(i as u64),
                latency: Duration::from_millis(if i == 15 { 900 } else { 5 }),
                outcome: if i == 25 {
                    Outcome::Error {
                        class: "http_503".into(),
                    }
                } else {
                    Outcome::Accepted {
                        job_id: format!("j{i}"),
                    }
                },
            })
            .collect();
        let blocks = per_block(&samples, 2, 10);
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            (blocks[0]["from"].as_u64(), blocks[0]["to"].as_u64()),
            (Some(0), Some(10))
        );
        assert_eq!(
            (blocks[2]["from"].as_u64(), blocks[2]["to"].as_u64()),
            (Some(20), Some(25))
        );
        assert!(blocks[0]["latency"]["max_ms"].as_f64().unwrap() < 10.0);
        assert!(blocks[1]["latency"]["max_ms"].as_f64().unwrap() >= 899.0);
        assert_eq!(blocks[2]["errors"], 1);
        assert_eq!(blocks[2]["latency"]["count"], 4);
    }
}
