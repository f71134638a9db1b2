//! The `ticketflow` command line (ARCHITECTURE §5).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use topology::config::{parse_duration, Config};
use topology::{app, demo, kafka, replay, telemetry, tenants};

#[derive(Parser)]
#[command(
    name = "ticketflow",
    version,
    about = "Enhances ServiceDesk Plus tickets through a Kafka dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest and/or stages (default: everything; embedded broker when KAFKA_BROKERS is unset).
    Run {
        /// Comma-separated: ingest,validate,context,synthesize,update,record.
        #[arg(long, default_value = "ingest,validate,context,synthesize,update,record")]
        stages: String,
    },
    /// Run the whole pipeline against built-in SDP and LLM simulators and print the notes.
    Demo,
    /// Manage tenants (works whether or not `run` is up).
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// Topic administration.
    #[command(subcommand)]
    Topics(TopicsCmd),
    /// Run the embedded broker alone (for multi-process setups on one machine).
    Broker,
    /// Apply store migrations.
    Migrate,
    /// Consumer lag of every stage group with a verdict (OK, WARN, ERR, STOP, STALL, REWIND), backlog per tenant and time to drain.
    Lag {
        /// Keep sampling (sliding window) and print after every sample until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
        /// Time between samples.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: Duration,
        /// Samples judged together; without --watch, how long the command samples before it answers.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        window: Duration,
        /// Only these stages' groups (comma-separated).
        #[arg(long)]
        stages: Option<String>,
    },
    /// Send webhooks received in a time window through the dataflow again:
    /// --mode re-enhance (new jobs, new notes) or re-deliver (same jobs, no second note).
    Replay(replay::cli::ReplayArgs),
    /// Dead-letter topics.
    #[command(subcommand)]
    Dlq(replay::cli::DlqCmd),
    /// Consumer groups.
    #[command(subcommand)]
    Groups(replay::cli::GroupsCmd),
    /// A tenant's own knowledge-base articles, searched (BM25) beside SDP's solutions.
    #[command(subcommand)]
    Kb(KbCmd),
    /// A tenant's asset inventory, matched by IP address and host name beside SDP's assets.
    #[command(subcommand)]
    Assets(AssetsCmd),
}

#[derive(Subcommand)]
enum KbCmd {
    /// Import articles from a JSON array, JSON lines or CSV (`.csv`) file of
    /// {id, title, content (or description), url?, keywords?}. An id imported
    /// before is replaced; a file with any bad entry is refused whole, each
    /// problem named with its line.
    Import {
        /// The tenant (must exist).
        tenant_id: String,
        /// The file to import.
        file: std::path::PathBuf,
        /// Print `{"tenant_id", "articles"}` (the count imported).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AssetsCmd {
    /// Import assets from a CSV file whose header names (any order, any case)
    /// name (required), ip, hostname, type, owner, site. An asset name
    /// imported before is replaced; a file with any bad row is refused whole,
    /// each problem named with its line.
    Import {
        /// The tenant (must exist).
        tenant_id: String,
        /// The file to import.
        file: std::path::PathBuf,
        /// Print `{"tenant_id", "assets"}` (the count imported).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TenantsCmd {
    /// Add a tenant; prints its webhook secret and API token (shown once).
    Add(AddArgs),
    /// Change a tenant's SDP settings, rate limit or events (only what is given; keeps its API token).
    Update(UpdateArgs),
    /// List tenants (no secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Suspend a tenant: its webhooks get 403 and queued records are skipped.
    Suspend {
        tenant_id: String,
        /// Why (recorded in the history of skipped records).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended tenant.
    Resume { tenant_id: String },
    /// New webhook secret; the previous one stays valid for the grace period.
    RotateSecret {
        tenant_id: String,
        #[arg(long)]
        webhook_secret: Option<String>,
        /// Read the new secret from this file.
        #[arg(long)]
        webhook_secret_file: Option<std::path::PathBuf>,
        /// Read the new secret from stdin.
        #[arg(long)]
        webhook_secret_stdin: bool,
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        grace: Duration,
        #[arg(long)]
        json: bool,
    },
    /// New API bearer token (shown once, stored hashed); the old one stops working.
    RotateToken {
        tenant_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a tenant (refused while history, feedback or claims remain, unless --purge).
    Remove {
        tenant_id: String,
        /// Delete the tenant's history, feedback and claims too.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Args)]
struct AddArgs {
    tenant_id: String,
    /// Base URL /api/v3/... is appended to (on-prem https://host:port, cloud https://<domain>/app/<portal>).
    #[arg(long)]
    servicedesk_url: String,
    #[arg(long)]
    servicedesk_token: Option<String>,
    /// Read the SDP token from this file.
    #[arg(long)]
    servicedesk_token_file: Option<std::path::PathBuf>,
    /// Read the SDP token from stdin.
    #[arg(long)]
    servicedesk_token_stdin: bool,
    /// authtoken (on-prem), zoho-oauth (cloud: access tokens bought with
    /// the --zoho-* credentials) or zoho (cloud, a static token).
    #[arg(long, default_value = "authtoken")]
    servicedesk_auth: String,
    #[command(flatten)]
    zoho: ZohoArgs,
    /// whsec_<base64>; generated when not given.
    #[arg(long)]
    webhook_secret: Option<String>,
    /// Read the webhook secret from this file.
    #[arg(long)]
    webhook_secret_file: Option<std::path::PathBuf>,
    /// Read the webhook secret from stdin.
    #[arg(long)]
    webhook_secret_stdin: bool,
    /// SDP API calls per minute for this tenant.
    #[arg(long, default_value_t = 600)]
    requests_per_minute: u32,
    /// Webhook events to enhance (comma-separated).
    #[arg(long, default_value = "request_created")]
    events: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UpdateArgs {
    tenant_id: String,
    #[arg(long)]
    servicedesk_url: Option<String>,
    /// authtoken (on-prem), zoho-oauth (cloud, with the --zoho-* credentials)
    /// or zoho (cloud, a static token).
    #[arg(long)]
    servicedesk_auth: Option<String>,
    #[command(flatten)]
    zoho: ZohoArgs,
    #[arg(long)]
    servicedesk_token: Option<String>,
    /// Read the SDP token from this file.
    #[arg(long)]
    servicedesk_token_file: Option<std::path::PathBuf>,
    /// Read the SDP token from stdin.
    #[arg(long)]
    servicedesk_token_stdin: bool,
    #[arg(long)]
    requests_per_minute: Option<u32>,
    /// Webhook events to enhance (comma-separated; replaces the list).
    #[arg(long)]
    events: Option<String>,
}

/// Zoho OAuth credentials of a cloud SDP tenant (`--servicedesk-auth
/// zoho-oauth`); secrets from the flag, a file or stdin.
#[derive(Args)]
struct ZohoArgs {
    /// Zoho OAuth client id.
    #[arg(long)]
    zoho_client_id: Option<String>,
    /// Zoho OAuth client secret.
    #[arg(long)]
    zoho_client_secret: Option<String>,
    /// Read the client secret from this file.
    #[arg(long)]
    zoho_client_secret_file: Option<std::path::PathBuf>,
    /// Read the client secret from stdin.
    #[arg(long)]
    zoho_client_secret_stdin: bool,
    /// Zoho OAuth refresh token (scope SDPOnDemand.requests.ALL, plus
    /// SDPOnDemand.solutions.READ and SDPOnDemand.assets.READ for context).
    #[arg(long)]
    zoho_refresh_token: Option<String>,
    /// Read the refresh token from this file.
    #[arg(long)]
    zoho_refresh_token_file: Option<std::path::PathBuf>,
    /// Read the refresh token from stdin.
    #[arg(long)]
    zoho_refresh_token_stdin: bool,
    /// The Zoho accounts server of the tenant's data centre
    /// (default https://accounts.zoho.com; e.g. https://accounts.zoho.eu).
    #[arg(long)]
    zoho_accounts_url: Option<String>,
}

impl ZohoArgs {
    fn sources(&self) -> (tenants::SecretSource, tenants::SecretSource) {
        (
            tenants::SecretSource {
                value: self.zoho_client_secret.clone(),
                file: self.zoho_client_secret_file.clone(),
                stdin: self.zoho_client_secret_stdin,
            },
            tenants::SecretSource {
                value: self.zoho_refresh_token.clone(),
                file: self.zoho_refresh_token_file.clone(),
                stdin: self.zoho_refresh_token_stdin,
            },
        )
    }

    /// Reads the settings; `other` are the command's other secret sources
    /// (only one secret may come from stdin).
    fn read(self, other: &[(&str, &tenants::SecretSource)]) -> anyhow::Result<tenants::OAuthSettings> {
        let (secret_src, refresh_src) = self.sources();
        let mut all: Vec<(&str, &tenants::SecretSource)> = other.to_vec();
        all.push(("zoho-client-secret", &secret_src));
        all.push(("zoho-refresh-token", &refresh_src));
        tenants::one_stdin(&all).map_err(anyhow::Error::msg)?;
        Ok(tenants::OAuthSettings {
            client_id: self.zoho_client_id,
            client_secret: secret_src.read("zoho-client-secret").map_err(anyhow::Error::msg)?,
            refresh_token: refresh_src.read("zoho-refresh-token").map_err(anyhow::Error::msg)?,
            accounts_url: self.zoho_accounts_url,
        })
    }
}

#[derive(Subcommand)]
enum TopicsCmd {
    /// Create every topic of the dataflow (idempotent) with retention per
    /// kind, max.message.bytes, replication factor and min.insync.replicas;
    /// then compare existing topics with those settings.
    Create {
        /// Exit non-zero when an existing topic differs from the settings
        /// (default: warn).
        #[arg(long)]
        strict: bool,
        /// Only compare; create nothing.
        #[arg(long)]
        check: bool,
    },
    /// Add partitions to a topic (a dry run unless --execute; refused while
    /// records wait on it, and on the embedded broker).
    AddPartitions(replay::cli::AddPartitionsArgs),
}

fn check_stage(stage: &str) -> anyhow::Result<()> {
    if !topology::dataflow::STAGES.contains(&stage) {
        anyhow::bail!(
            "unknown stage '{stage}': expected one of {}",
            topology::dataflow::STAGES.join(", ")
        );
    }
    Ok(())
}

fn print_lag(v: &Value) {
    println!(
        "{:<26} {:<7} {:>8} {:>9} {:>8} {:>8} {:>12}  REASON",
        "GROUP", "STATUS", "LAG", "BEHIND(s)", "IN/s", "OUT/s", "DRAIN"
    );
    let f = |x: &Value| x.as_f64().map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
    for g in v["groups"].as_array().into_iter().flatten() {
        let drain = match g["eta_seconds"].as_f64() {
            Some(s) if s <= 0.0 => "drained".to_string(),
            Some(s) => format!("{s:.0} s"),
            None => "not draining".to_string(),
        };
        println!(
            "{:<26} {:<7} {:>8} {:>9} {:>8} {:>8} {:>12}  {}",
            g["group"].as_str().unwrap_or("?"),
            g["status"].as_str().unwrap_or("?"),
            g["total_lag"],
            f(&g["seconds_behind"]),
            f(&g["produce_rate"]),
            f(&g["consume_rate"]),
            drain,
            g["reason"].as_str().unwrap_or("")
        );
        for p in g["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["lag"].as_i64().unwrap_or(0) > 0 || p["status"] != "OK")
        {
            println!(
                "    {}/{}: {} committed {} high {} lag {}",
                p["topic"].as_str().unwrap_or("?"),
                p["partition"],
                p["status"].as_str().unwrap_or("?"),
                p["committed"],
                p["high"],
                p["lag"]
            );
        }
        let tenants: Vec<String> = g["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .take(10)
            .map(|t| format!("{} {}", t["tenant"].as_str().unwrap_or("?"), t["backlog"]))
            .collect();
        if !tenants.is_empty() {
            println!("    backlog by tenant: {}", tenants.join(", "));
        }
    }
    let dlq: Vec<String> = v["dlq"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["depth"].as_i64().unwrap_or(0) > 0)
        .map(|d| {
            format!(
                "{} {} (+{})",
                d["stage"].as_str().unwrap_or("?"),
                d["depth"],
                d["added_in_window"]
            )
        })
        .collect();
    if !dlq.is_empty() {
        println!("dead letters held: {}", dlq.join(", "));
    }
}

async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Demo) {
        telemetry::init(true);
        return demo::run().await;
    }
    let config = Config::from_env()?;
    // Traces (when configured) for `run`; flushed when this returns.
    let _telemetry = telemetry::init_with_traces(
        &config,
        match &cli.command {
            Command::Run { stages } => Some(stages.as_str()),
            _ => None,
        },
    );
    match cli.command {
        Command::Demo => unreachable!("handled above"),
        Command::Run { stages } => {
            let components = app::parse_components(&stages).map_err(anyhow::Error::msg)?;
            let running = app::start(&config, &components).await?;
            let fatal = tokio::select! {
                _ = signal() => None,
                reason = running.fatal() => Some(reason),
            };
            running.stop().await;
            if let Some(reason) = fatal {
                anyhow::bail!("exiting so the supervisor restarts this process: {reason}");
            }
        }
        Command::Broker => {
            if config.kafka_brokers.is_some() {
                anyhow::bail!(
                    "KAFKA_BROKERS is set: `ticketflow broker` runs the embedded broker only when it is unset"
                );
            }
            let b = app::start_embedded_broker(&config).await?;
            let factory = kafka::KafkaFactory::from_config(&config);
            factory
                .create_topics(&app::dataflow(&config).topics())
                .await
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "embedded broker on {} (data in {}); Ctrl-C to stop",
                b.addr,
                config.data_dir.display()
            );
            let mut watch = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = signal() => break,
                    _ = watch.tick() => {
                        if b.has_failed() {
                            anyhow::bail!("the embedded broker stopped serving; exiting so the supervisor restarts it");
                        }
                    }
                }
            }
        }
        Command::Migrate => {
            println!("{}", app::migrate_store(&config).await?);
        }
        Command::Topics(TopicsCmd::Create { strict, check }) => {
            let factory = kafka::KafkaFactory::from_config(&config);
            factory
                .wait_ready(Duration::from_secs(10))
                .await
                .map_err(|e| anyhow::anyhow!("{e} (is `ticketflow run` or `ticketflow broker` up?)"))?;
            let topics = app::dataflow(&config).topics();
            if !check {
                let created = factory.create_topics(&topics).await.map_err(anyhow::Error::msg)?;
                println!(
                    "{} topics: {} created, {} already existed",
                    topics.len(),
                    created.len(),
                    topics.len() - created.len()
                );
            }
            let mismatches = factory.check_topics(&topics).await.map_err(anyhow::Error::msg)?;
            for m in &mismatches {
                eprintln!("warning: topic {}: {}", m.topic, m.what);
            }
            if mismatches.is_empty() {
                println!("existing topics match the configured settings");
            } else if strict || check {
                anyhow::bail!(
                    "{} setting(s) of existing topics differ from the configuration (change them with kafka-configs.sh or set the TICKETFLOW_* topic variables to match)",
                    mismatches.len()
                );
            }
        }
        Command::Kb(KbCmd::Import {
            tenant_id,
            file,
            json: j,
        }) => {
            let store = app::open_store(&config).await?;
            let n = topology::import::import_articles(store.as_ref(), &tenant_id, &file).await?;
            if j {
                println!("{}", json!({"tenant_id": tenant_id, "articles": n}));
            } else {
                println!("imported {n} article(s) into the knowledge base of tenant '{tenant_id}'");
            }
        }
        Command::Assets(AssetsCmd::Import {
            tenant_id,
            file,
            json: j,
        }) => {
            let store = app::open_store(&config).await?;
            let n = topology::import::import_assets(store.as_ref(), &tenant_id, &file).await?;
            if j {
                println!("{}", json!({"tenant_id": tenant_id, "assets": n}));
            } else {
                println!("imported {n} asset(s) into the inventory of tenant '{tenant_id}'");
            }
        }
        Command::Tenants(cmd) => {
            let store = app::open_store(&config).await?;
            match cmd {
                TenantsCmd::Add(a) => {
                    let json_out = a.json;
                    let id = a.tenant_id.clone();
                    let token_src = tenants::SecretSource {
                        value: a.servicedesk_token,
                        file: a.servicedesk_token_file,
                        stdin: a.servicedesk_token_stdin,
                    };
                    let secret_src = tenants::SecretSource {
                        value: a.webhook_secret,
                        file: a.webhook_secret_file,
                        stdin: a.webhook_secret_stdin,
                    };
                    let oauth = a
                        .zoho
                        .read(&[("servicedesk-token", &token_src), ("webhook-secret", &secret_src)])?;
                    let servicedesk_token = match token_src.read("servicedesk-token").map_err(anyhow::Error::msg)? {
                        Some(t) => t,
                        // OAuth tenants buy their tokens.
                        None if a.servicedesk_auth == "zoho-oauth" => String::new(),
                        None => anyhow::bail!(
                            "give the SDP token with --servicedesk-token, --servicedesk-token-file or --servicedesk-token-stdin"
                        ),
                    };
                    let webhook_secret = secret_src.read("webhook-secret").map_err(anyhow::Error::msg)?;
                    let events = tenants::parse_events(&a.events).map_err(anyhow::Error::msg)?;
                    let (secret, token) = tenants::add_with_oauth(
                        store.as_ref(),
                        tenants::AddTenant {
                            tenant_id: a.tenant_id,
                            servicedesk_url: a.servicedesk_url,
                            servicedesk_token,
                            servicedesk_auth: a.servicedesk_auth,
                            webhook_secret,
                            requests_per_minute: a.requests_per_minute,
                            events,
                        },
                        oauth,
                    )
                    .await
                    .map_err(anyhow::Error::msg)?;
                    if json_out {
                        println!(
                            "{}",
                            json!({"tenant_id": id, "webhook_secret": secret, "api_token": token})
                        );
                    } else {
                        println!("tenant '{id}' added");
                        println!("webhook URL:    http://{}/webhooks/servicedesk/{id}", config.http_addr);
                        println!("webhook secret: {secret}");
                        println!("API token:      {token}   (shown once; stored hashed)");
                    }
                }
                TenantsCmd::Update(u) => {
                    let token_src = tenants::SecretSource {
                        value: u.servicedesk_token,
                        file: u.servicedesk_token_file,
                        stdin: u.servicedesk_token_stdin,
                    };
                    let oauth = u.zoho.read(&[("servicedesk-token", &token_src)])?;
                    let servicedesk_token = token_src.read("servicedesk-token").map_err(anyhow::Error::msg)?;
                    let events = u
                        .events
                        .as_deref()
                        .map(tenants::parse_events)
                        .transpose()
                        .map_err(anyhow::Error::msg)?;
                    let id = u.tenant_id.clone();
                    let changed = tenants::update(
                        store.as_ref(),
                        tenants::UpdateTenant {
                            tenant_id: u.tenant_id,
                            servicedesk_url: u.servicedesk_url,
                            servicedesk_auth: u.servicedesk_auth,
                            servicedesk_token,
                            requests_per_minute: u.requests_per_minute,
                            events,
                            oauth,
                        },
                    )
                    .await
                    .map_err(anyhow::Error::msg)?;
                    println!("tenant '{id}' updated: {}", changed.join(", "));
                }
                TenantsCmd::List { json: j } => {
                    let list: Vec<Value> = store.list_tenants().await?.iter().map(tenants::describe).collect();
                    if j {
                        println!("{}", Value::Array(list));
                    } else {
                        println!(
                            "{:<24} {:<10} {:>6}  {:<40} SUSPENDED",
                            "TENANT", "AUTH", "RPM", "SERVICEDESK URL"
                        );
                        for t in list {
                            println!(
                                "{:<24} {:<10} {:>6}  {:<40} {}",
                                t["tenant_id"].as_str().unwrap_or(""),
                                t["servicedesk_auth"].as_str().unwrap_or(""),
                                t["requests_per_minute"],
                                t["servicedesk_url"].as_str().unwrap_or(""),
                                t["suspended"]
                                    .as_str()
                                    .map(|r| format!("yes: {r}"))
                                    .unwrap_or_else(|| "-".into())
                            );
                        }
                    }
                }
                TenantsCmd::Suspend { tenant_id, reason } => {
                    let previous = tenants::suspend(store.as_ref(), &tenant_id, reason)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    match previous {
                        Some(p) => println!("tenant '{tenant_id}' was already suspended ({p}); reason replaced"),
                        None => println!(
                            "tenant '{tenant_id}' suspended: its webhooks get 403 and queued records are skipped (running processes see this within {} s)",
                            app::TENANT_CACHE_TTL.as_secs()
                        ),
                    }
                }
                TenantsCmd::Resume { tenant_id } => {
                    let reason = tenants::resume(store.as_ref(), &tenant_id)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    println!("tenant '{tenant_id}' resumed (was suspended: {reason})");
                }
                TenantsCmd::RotateToken { tenant_id, json: j } => {
                    let token = tenants::rotate_token(store.as_ref(), &tenant_id)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    if j {
                        println!("{}", json!({"tenant_id": tenant_id, "api_token": token}));
                    } else {
                        println!("new API token for '{tenant_id}': {token}   (shown once; stored hashed)");
                        println!("the previous token no longer works");
                    }
                }
                TenantsCmd::RotateSecret {
                    tenant_id,
                    webhook_secret,
                    webhook_secret_file,
                    webhook_secret_stdin,
                    grace,
                    json: j,
                } => {
                    let webhook_secret = tenants::SecretSource {
                        value: webhook_secret,
                        file: webhook_secret_file,
                        stdin: webhook_secret_stdin,
                    }
                    .read("webhook-secret")
                    .map_err(anyhow::Error::msg)?;
                    let secret = tenants::rotate(store.as_ref(), &tenant_id, webhook_secret, grace)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    if j {
                        println!(
                            "{}",
                            json!({"tenant_id": tenant_id, "webhook_secret": secret, "previous_valid_for_seconds": grace.as_secs()})
                        );
                    } else {
                        println!("new webhook secret for '{tenant_id}': {secret}");
                        println!("the previous secret stays valid for {} s", grace.as_secs());
                    }
                }
                TenantsCmd::Remove { tenant_id, purge } => {
                    tenants::remove(store.as_ref(), &tenant_id, purge)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    if purge {
                        println!("tenant '{tenant_id}' removed with its history, feedback and claims");
                    } else {
                        println!("tenant '{tenant_id}' removed");
                    }
                }
            }
        }
        Command::Lag {
            watch,
            json: j,
            interval,
            window,
            stages,
        } => {
            if interval.is_zero() || window < interval * 2 {
                anyhow::bail!("--window ({window:?}) must hold at least two --intervals ({interval:?}), and --interval must be above zero");
            }
            let watched: Vec<&'static str> = match &stages {
                None => topology::dataflow::STAGES.to_vec(),
                Some(list) => {
                    let mut out = Vec::new();
                    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        check_stage(s)?;
                        out.extend(topology::dataflow::STAGES.iter().copied().filter(|x| *x == s));
                    }
                    out
                }
            };
            let settings = topology::lag::LagSettings {
                interval,
                window,
                ..Default::default()
            };
            let monitor = topology::lag::LagMonitor::new(
                kafka::KafkaFactory::from_config(&config),
                app::dataflow(&config),
                watched,
                settings,
            );
            let started = std::time::Instant::now();
            loop {
                // Interruptible while sampling too (a broker that does not
                // answer makes a sample wait out its timeouts).
                tokio::select! {
                    _ = signal() => break,
                    r = monitor.sample_now() => r.map_err(anyhow::Error::msg)?,
                }
                // The window is full, or nothing could be read at all (a broker
                // that does not answer is the answer).
                let all_err = {
                    let v = monitor.report();
                    v["groups"]
                        .as_array()
                        .is_some_and(|g| !g.is_empty() && g.iter().all(|g| g["status"] == "ERR"))
                };
                let full = all_err
                    || (started.elapsed() + interval > window && monitor.samples() >= topology::lag::MIN_SAMPLES);
                if watch || full {
                    let v = monitor.report();
                    if j {
                        println!("{v}");
                    } else {
                        print_lag(&v);
                    }
                    if !watch {
                        break;
                    }
                }
                tokio::select! {
                    _ = signal() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                if watch && !j {
                    println!();
                }
            }
        }
        Command::Replay(args) => replay::cli::replay(&config, args).await?,
        Command::Dlq(cmd) => replay::cli::dlq(&config, cmd).await?,
        Command::Groups(cmd) => replay::cli::groups(&config, cmd).await?,
        Command::Topics(TopicsCmd::AddPartitions(args)) => replay::cli::add_partitions(&config, args).await?,
    }
    Ok(())
}

/// The arguments, or a one-line reason and exit 2 (clap's own help and
/// version output are left as they are).
fn parse_args() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // clap's first paragraph, on one line.
            let text = e.render().to_string();
            let reason: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", reason.join(" "));
            std::process::exit(2);
        }
    }
}

fn main() {
    let cli = parse_args();
    // Kafka clients block threads in rebalance callbacks; keep spare workers.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(main_inner(cli));
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Err(e) = result {
        // One line: the reason and its causes.
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
