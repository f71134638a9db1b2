//! Arguments and output of `ticketflow replay`, `dlq`, `groups` and
//! `topics add-partitions`. With `--json`, operations that go record by
//! record print one JSON object per line for each record and the summary
//! last, as `{"summary": {...}}`.

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use super::admin::{AddPartitionsRequest, ResetRequest, ResetTarget};
use super::dlq::{DlqRetryOptions, Report};
use super::webhooks::{ReplayMode, ReplayOptions};
use super::{check_batch, check_rate, parse_time, ErrorClass, Filter, DEFAULT_BATCH};
use crate::config::Config;
use crate::ops::KafkaOps;

fn ops(config: &Config) -> KafkaOps {
    KafkaOps {
        factory: crate::kafka::KafkaFactory::from_config(config),
        dataflow: crate::app::dataflow(config),
        services: None,
        monitor: None,
    }
}

/// `ticketflow replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// re-enhance: new jobs, enhanced again, a new note each; re-deliver: the
    /// same jobs again (same job ids), no second note where one was posted.
    #[arg(long, value_enum)]
    pub mode: ReplayMode,
    /// Start: RFC 3339 (2026-11-22T14:00:00Z), a date, epoch ms, or a duration ago (30m).
    #[arg(long)]
    pub from: String,
    /// End (exclusive), same forms: reading stops at the first webhook at or
    /// after it; default: what the topic holds when the replay starts.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub ticket: Option<String>,
    /// Records per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Records read, sent and acknowledged per step.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// List what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// `ticketflow dlq`.
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// The latest records of a stage's dead-letter topic.
    List {
        stage: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One dead-lettered record in full.
    Show { stage: String, partition: i32, offset: i64 },
    /// Re-send dead letters to the topic they failed on: every record not
    /// retried before (remembered by the group <prefix>.dlq-retry.<stage>),
    /// or exactly one with --partition/--offset.
    Retry(DlqRetryArgs),
}

#[derive(Debug, Args)]
pub struct DlqRetryArgs {
    pub stage: String,
    /// With --offset: exactly this record, even if retried before (filters do not apply; nothing is remembered).
    #[arg(long, requires = "offset", conflicts_with_all = ["tenant", "ticket", "error_class", "from", "to"])]
    pub partition: Option<i32>,
    #[arg(long, requires = "partition")]
    pub offset: Option<i64>,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub ticket: Option<String>,
    #[arg(long, value_enum)]
    pub error_class: Option<ErrorClass>,
    /// Only dead letters written at or after this time.
    #[arg(long)]
    pub from: Option<String>,
    /// Stop at the first dead letter written at or after this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Records per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Records read, re-sent and acknowledged per step (each step's progress is then remembered).
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// List what would be re-sent; send and remember nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// `ticketflow groups`.
#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    /// Move a consumer group's committed offsets (a dry run unless
    /// --execute; refused while the group has active members).
    ResetOffsets(ResetOffsetsArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_time"])))]
pub struct ResetOffsetsArgs {
    /// A stage group (<prefix>.<stage>), a DLQ retry group
    /// (<prefix>.dlq-retry.<stage>), or another group with --topic.
    pub group: String,
    /// The first offset each partition still holds.
    #[arg(long)]
    pub to_earliest: bool,
    /// The end: everything there now counts as consumed.
    #[arg(long)]
    pub to_latest: bool,
    /// This offset (within what the partition holds).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// The first record at or after this time (same forms as replay --from).
    #[arg(long)]
    pub to_time: Option<String>,
    /// Only this topic of the group's (repeatable); default: every topic the group reads.
    #[arg(long)]
    pub topic: Vec<String>,
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Apply the change (default: show it).
    #[arg(long)]
    pub execute: bool,
    #[arg(long)]
    pub json: bool,
}

/// `ticketflow topics add-partitions`.
#[derive(Debug, Args)]
pub struct AddPartitionsArgs {
    pub topic: String,
    /// The partition count after the change.
    #[arg(long)]
    pub count: i32,
    /// Add them although consumers still have records waiting on the topic (a ticket's events may be reordered).
    #[arg(long)]
    pub force: bool,
    /// Apply the change (default: show it).
    #[arg(long)]
    pub execute: bool,
    #[arg(long)]
    pub json: bool,
}

/// `2026-11-22T14:00:00.000Z` for epoch milliseconds.
pub fn fmt_ms(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// What a failed run did before it stopped, from its summary.
pub fn done_before_failure(s: &Value) -> String {
    let kept: Vec<String> = s["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let c = p.get("committed")?;
            (!c.is_null()).then(|| format!("{}: {}", p["partition"], c))
        })
        .collect();
    if s.get("resent").is_some() {
        let mut text = format!("re-sent {} record(s) before it", s["resent"]);
        if s["group"].is_string() && !kept.is_empty() {
            text.push_str(&format!("; remembered positions by partition: {}", kept.join(", ")));
        }
        text
    } else {
        format!("sent {} record(s) before it", s["sent"])
    }
}

fn time_opt(s: &Option<String>, what: &str) -> anyhow::Result<Option<i64>> {
    s.as_deref()
        .map(parse_time)
        .transpose()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--{what}"))
}

fn finish(report: Report, json_out: bool, print: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if json_out {
        println!("{}", json!({"summary": report.summary}));
    } else {
        print(&report.summary);
    }
    match report.failure {
        None => Ok(()),
        Some(f) => anyhow::bail!("{f} ({})", done_before_failure(&report.summary)),
    }
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().map(str::to_string).unwrap_or_else(|| "-".into())
}

pub async fn replay(config: &Config, a: ReplayArgs) -> anyhow::Result<()> {
    let from_ms = parse_time(&a.from).map_err(anyhow::Error::msg).context("--from")?;
    let to_ms = time_opt(&a.to, "to")?;
    if let Some(to) = to_ms.filter(|to| *to <= from_ms) {
        anyhow::bail!("--from ({}) must be before --to ({})", fmt_ms(from_ms), fmt_ms(to));
    }
    let opts = ReplayOptions {
        mode: a.mode,
        from_ms,
        filter: Filter {
            tenant: a.tenant,
            ticket: a.ticket,
            to_ms,
            ..Filter::default()
        },
        batch: check_batch(a.batch).map_err(anyhow::Error::msg)?,
        rate: check_rate(a.rate).map_err(anyhow::Error::msg)?,
        dry_run: a.dry_run,
    };
    let j = a.json;
    if !j {
        println!(
            "replay, mode {}{}: webhooks from {} to {}",
            opts.mode.as_str(),
            if opts.dry_run {
                " (dry run: nothing is sent)"
            } else {
                ""
            },
            fmt_ms(from_ms),
            to_ms.map(fmt_ms).unwrap_or_else(|| "what the topic holds now".into())
        );
    }
    let mut line = |v: &Value| {
        if j {
            println!("{v}");
            return;
        }
        let who = format!(
            "{}:{} job {}",
            text(v, "tenant_id"),
            text(v, "ticket_id"),
            text(v, "job_id")
        );
        let at = format!("{}@{}", v["partition"], v["offset"]);
        match v["action"].as_str() {
            Some("sent") if v["new_job_id"].is_string() => {
                println!("  sent        {at}  {who} -> new job {}", text(v, "new_job_id"))
            }
            Some("sent") => println!("  sent        {at}  {who} (same job)"),
            Some("would_send") => println!("  would send  {at}  {who}"),
            _ => println!("  skipped     {at}: {}", text(v, "reason")),
        }
    };
    let report = ops(config).replay_with(&opts, &mut line).await;
    finish(report, j, |s| {
        let what = match opts.mode {
            ReplayMode::ReEnhance => "as new jobs (re-enhance: each gets a new note)",
            ReplayMode::ReDeliver => "as the same jobs (re-deliver: no second note)",
        };
        if opts.dry_run {
            println!(
                "{} webhook(s) would be sent {what}; dry run: nothing sent",
                s["would_send"]
            );
        } else {
            println!("{} webhook(s) sent {what}", s["sent"]);
        }
        println!(
            "examined {}, left out by --tenant/--ticket {}, skipped (unreadable) {}",
            s["examined"], s["excluded"], s["skipped_count"]
        );
    })
}

fn dlq_record_text(r: &Value) -> String {
    let e = &r["envelope"];
    format!(
        "{}@{}  tenant {} ticket {} job {} attempt {} ({}): {}",
        r["partition"],
        r["offset"],
        e["tenant_id"].as_str().unwrap_or("?"),
        e["ticket_id"].as_str().unwrap_or("?"),
        e["job_id"].as_str().unwrap_or("?"),
        e["attempt"],
        e["error_class"].as_str().unwrap_or("?"),
        e["error"].as_str().or(r["decode_error"].as_str()).unwrap_or("?")
    )
}

pub async fn dlq(config: &Config, cmd: DlqCmd) -> anyhow::Result<()> {
    let ops = ops(config);
    match cmd {
        DlqCmd::List { stage, limit, json: j } => {
            super::dlq::check_stage(&stage).map_err(anyhow::Error::msg)?;
            let v = ops.dlq_records(&stage, limit).await.map_err(anyhow::Error::msg)?;
            if j {
                println!("{v}");
            } else {
                println!("{} record(s) on {}", v["count"], v["topic"].as_str().unwrap_or(""));
                for r in v["records"].as_array().into_iter().flatten() {
                    println!("  {}", dlq_record_text(r));
                }
            }
        }
        DlqCmd::Show {
            stage,
            partition,
            offset,
        } => {
            super::dlq::check_stage(&stage).map_err(anyhow::Error::msg)?;
            let rec = ops
                .dlq_record(&stage, partition, offset)
                .await
                .map_err(anyhow::Error::msg)?
                .with_context(|| format!("no record at partition {partition} offset {offset} of {stage}'s DLQ"))?;
            println!("{}", serde_json::to_string_pretty(&rec)?);
        }
        DlqCmd::Retry(a) => {
            super::dlq::check_stage(&a.stage).map_err(anyhow::Error::msg)?;
            let from_ms = time_opt(&a.from, "from")?;
            let to_ms = time_opt(&a.to, "to")?;
            if let (Some(f), Some(t)) = (from_ms, to_ms) {
                if f >= t {
                    anyhow::bail!("--from ({}) must be before --to ({})", fmt_ms(f), fmt_ms(t));
                }
            }
            let opts = DlqRetryOptions {
                records: a.partition.zip(a.offset).map(|p| vec![p]),
                filter: Filter {
                    tenant: a.tenant,
                    ticket: a.ticket,
                    error_class: a.error_class,
                    from_ms,
                    to_ms,
                },
                batch: check_batch(a.batch).map_err(anyhow::Error::msg)?,
                rate: check_rate(a.rate).map_err(anyhow::Error::msg)?,
                dry_run: a.dry_run,
            };
            let (j, stage) = (a.json, a.stage.clone());
            let mut line = |v: &Value| {
                if j {
                    println!("{v}");
                    return;
                }
                let at = format!("{}@{}", v["partition"], v["offset"]);
                let who = format!(
                    "tenant {} ticket {} job {} ({}): {}",
                    text(v, "tenant_id"),
                    text(v, "ticket_id"),
                    text(v, "job_id"),
                    text(v, "error_class"),
                    text(v, "error")
                );
                match v["action"].as_str() {
                    Some("resent") => println!("  re-sent       {at}  {who}"),
                    Some("would_resend") => println!("  would re-send {at}  {who} -> {}", text(v, "to_topic")),
                    _ => println!("  skipped       {at}: {}", text(v, "reason")),
                }
            };
            let report = ops.dlq_retry_with(&stage, &opts, &mut line).await;
            finish(report, j, |s| {
                if opts.dry_run {
                    println!(
                        "{} record(s) of the {stage} DLQ would be re-sent; skipped {}; dry run: nothing sent or remembered",
                        s["would_resend"], s["skipped_count"]
                    );
                } else {
                    println!(
                        "re-sent {} record(s) from the {stage} DLQ; skipped {}",
                        s["resent"], s["skipped_count"]
                    );
                }
                if s["excluded"].as_u64().unwrap_or(0) > 0 {
                    println!(
                        "{} record(s) left out by the filters; they stay for an unfiltered `dlq retry {stage}` (a filtered retry keeps its progress in a group of its own)",
                        s["excluded"]
                    );
                }
                if s["missing"].as_i64().unwrap_or(0) > 0 {
                    println!(
                        "{} record(s) were deleted by retention before they could be read",
                        s["missing"]
                    );
                }
            })?;
        }
    }
    Ok(())
}

pub async fn groups(config: &Config, cmd: GroupsCmd) -> anyhow::Result<()> {
    let GroupsCmd::ResetOffsets(a) = cmd;
    let target = if a.to_earliest {
        ResetTarget::Earliest
    } else if a.to_latest {
        ResetTarget::Latest
    } else if let Some(o) = a.to_offset {
        if o < 0 {
            anyhow::bail!("--to-offset {o} must not be negative");
        }
        ResetTarget::Offset(o)
    } else {
        let t = a.to_time.as_deref().unwrap_or_default();
        ResetTarget::Time(parse_time(t).map_err(anyhow::Error::msg).context("--to-time")?)
    };
    let req = ResetRequest {
        group: a.group,
        target,
        topics: a.topic,
        partition: a.partition,
        execute: a.execute,
    };
    let v = ops(config).reset_offsets(&req).await.map_err(anyhow::Error::msg)?;
    if a.json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "group {} ({}, {} member(s))",
        text(&v, "group"),
        text(&v, "state"),
        v["members"]
    );
    println!(
        "{:<32} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "TOPIC", "PARTITION", "CURRENT", "NEW", "LAG NOW", "LAG AFTER"
    );
    for p in v["partitions"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>9} {:>10} {:>10} {:>10} {:>10}",
            text(p, "topic"),
            p["partition"].to_string(),
            p["current"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            p["new"].to_string(),
            p["current_lag"].to_string(),
            p["lag_after"].to_string()
        );
    }
    if v["executed"] == true {
        println!("offsets of {} reset", text(&v, "group"));
    } else {
        println!("dry run: nothing changed; run again with --execute to apply");
    }
    Ok(())
}

pub async fn add_partitions(config: &Config, a: AddPartitionsArgs) -> anyhow::Result<()> {
    let req = AddPartitionsRequest {
        topic: a.topic,
        count: a.count,
        force: a.force,
        execute: a.execute,
        embedded_broker: config.kafka_brokers.is_none(),
    };
    let v = ops(config).add_partitions(&req).await.map_err(anyhow::Error::msg)?;
    if a.json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "{}: {} -> {} partitions",
        text(&v, "topic"),
        v["partitions"],
        v["count"]
    );
    for g in v["readers"].as_array().into_iter().flatten() {
        println!("  read by {}: {} record(s) left", text(g, "group"), g["lag"]);
    }
    if v["executed"] == true {
        println!(
            "partitions added; set TICKETFLOW_PARTITIONS={} so topics created later match",
            v["count"]
        );
    } else {
        println!("dry run: nothing changed; run again with --execute to apply");
    }
    Ok(())
}
