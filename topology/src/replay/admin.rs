//! `ticketflow groups reset-offsets` and `ticketflow topics add-partitions`:
//! both show their plan and change nothing unless `--execute`, and both
//! refuse, with the reason, what would be unsafe.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewPartitions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::reader::{self, FoundBy, TIMEOUT};
use crate::dataflow::{Dataflow, STAGES};
use crate::ops::KafkaOps;

/// Where `reset-offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(i64),
    /// The first record at or after this time (epoch ms).
    Time(i64),
}

#[derive(Debug, Clone)]
pub struct ResetRequest {
    pub group: String,
    pub target: ResetTarget,
    /// Only these of the group's topics (required for a group that is not Ticketflow's).
    pub topics: Vec<String>,
    pub partition: Option<i32>,
    pub execute: bool,
}

#[derive(Debug, Clone)]
pub struct AddPartitionsRequest {
    pub topic: String,
    pub count: i32,
    /// Add them although consumers have records left on the topic.
    pub force: bool,
    pub execute: bool,
    /// The broker is the embedded one (no `KAFKA_BROKERS`).
    pub embedded_broker: bool,
}

/// The topics a Ticketflow group reads: a stage group its inputs (main
/// input, retry tiers; for `record` the other stages' DLQs), a DLQ retry
/// group its stage's DLQ.
pub fn group_topics(dataflow: &Dataflow, group: &str) -> Option<Vec<String>> {
    for stage in STAGES {
        if group == dataflow.group(stage) {
            return Some(
                dataflow
                    .wiring(stage, 1, Duration::ZERO)
                    .inputs
                    .into_iter()
                    .map(|i| i.topic)
                    .collect(),
            );
        }
        if group == format!("{}.dlq-retry.{stage}", dataflow.prefix) {
            return Some(vec![dataflow.dlq(stage)]);
        }
    }
    None
}

/// The group's state and its members (`client_id@host`) as the broker reports them.
fn members_of(c: &BaseConsumer, group: &str) -> Result<(String, Vec<String>), String> {
    let list = c
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(|e| format!("cannot tell whether group {group} has active members ({e}); refusing"))?;
    Ok(match list.groups().iter().find(|g| g.name() == group) {
        Some(g) => (
            g.state().to_string(),
            g.members()
                .iter()
                .map(|m| member_name(m.client_id(), m.client_host(), m.id()))
                .collect(),
        ),
        None => ("Dead".to_string(), Vec::new()),
    })
}

/// `client_id@host`, or what the broker did report (the embedded broker
/// reports neither client id nor host, only the member id).
fn member_name(client_id: &str, host: &str, member_id: &str) -> String {
    let host = host.trim_start_matches('/');
    match (client_id.is_empty(), host.is_empty()) {
        (false, false) => format!("{client_id}@{host}"),
        (false, true) => client_id.to_string(),
        (true, false) => format!("{member_id}@{host}"),
        (true, true) if !member_id.is_empty() => member_id.to_string(),
        (true, true) => "a member that reports no id".to_string(),
    }
}

fn refuse_active(group: &str, members: &[String]) -> Result<(), String> {
    if members.is_empty() {
        return Ok(());
    }
    Err(format!(
        "group {group} has {} active member(s) ({}): offsets can only be reset while nothing consumes; stop those consumers (the `ticketflow run` processes of that stage) and run this again",
        members.len(),
        members.join(", ")
    ))
}

/// Every existing topic and its partition count.
fn existing_topics(c: &BaseConsumer) -> Result<HashMap<String, i32>, String> {
    let md = c
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| format!("cannot list the broker's topics: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

impl KafkaOps {
    /// Plans (and with `execute`, applies) new committed offsets for a group.
    pub async fn reset_offsets(&self, req: &ResetRequest) -> Result<Value, String> {
        let req = req.clone();
        self.blocking(move |factory, dataflow| {
            let group = req.group.as_str();
            let known = group_topics(&dataflow, group);
            let topics: Vec<String> = match (&known, req.topics.is_empty()) {
                (Some(all), true) => all.clone(),
                (Some(all), false) => {
                    if let Some(t) = req.topics.iter().find(|t| !all.contains(t)) {
                        return Err(format!("group {group} does not read topic {t} (it reads {})", all.join(", ")));
                    }
                    req.topics.clone()
                }
                (None, false) => req.topics.clone(),
                (None, true) => {
                    let stage_groups: Vec<String> = STAGES.iter().map(|s| dataflow.group(s)).collect();
                    return Err(format!(
                        "unknown group '{group}': Ticketflow's groups are {} and {}.dlq-retry.<stage>; for another group name its topics with --topic",
                        stage_groups.join(", "),
                        dataflow.prefix
                    ));
                }
            };
            let c = factory.reader(Some(group)).map_err(|e| e.to_string())?;
            let existing = existing_topics(&c)?;
            if let Some(t) = topics.iter().find(|t| !existing.contains_key(*t)) {
                return Err(format!("unknown topic '{t}': it does not exist on the broker (run `ticketflow topics create`?)"));
            }
            let (state, members) = members_of(&c, group)?;
            refuse_active(group, &members)?;
            let mut rows = Vec::new();
            let mut tpl = TopicPartitionList::new();
            for t in &topics {
                let marks = reader::watermarks(&c, t)?;
                if let Some(p) = req.partition {
                    if !marks.iter().any(|m| m.0 == p) {
                        return Err(format!("topic {t} has no partition {p} (it has 0 to {})", marks.len() as i32 - 1));
                    }
                }
                let ps: Vec<i32> = marks.iter().map(|m| m.0).collect();
                let current = reader::committed(&c, t, &ps)?;
                for (&(p, low, high), current) in marks.iter().zip(current) {
                    if req.partition.is_some_and(|want| want != p) {
                        continue;
                    }
                    let (new, found_by) = match req.target {
                        ResetTarget::Earliest => (low, None),
                        ResetTarget::Latest => (high, None),
                        ResetTarget::Offset(o) if (low..=high).contains(&o) => (o, None),
                        ResetTarget::Offset(o) => {
                            return Err(format!(
                                "offset {o} is outside {t}/{p}, which holds offsets {low} to {high} (the end); choose one in that range or use --partition"
                            ))
                        }
                        ResetTarget::Time(ms) => {
                            let (o, by) = reader::offset_at_time(&factory, &c, t, p, low, high, ms)?;
                            (o, Some(by))
                        }
                    };
                    tpl.add_partition_offset(t, p, Offset::Offset(new)).map_err(|e| e.to_string())?;
                    rows.push(json!({
                        "topic": t, "partition": p, "low": low, "high": high,
                        "current": current, "new": new, "lag_after": high - new,
                        "current_lag": current.map(|c| high - c.clamp(low, high)).unwrap_or(high - low),
                        "found_by": found_by.map(FoundBy::as_str),
                    }));
                }
            }
            let mut out = json!({
                "group": group, "state": state, "members": members.len(),
                "target": match req.target {
                    ResetTarget::Earliest => json!("earliest"),
                    ResetTarget::Latest => json!("latest"),
                    ResetTarget::Offset(o) => json!({"offset": o}),
                    ResetTarget::Time(ms) => json!({"time_ms": ms}),
                },
                "executed": false, "partitions": rows,
            });
            if !req.execute {
                return Ok(out);
            }
            // Once more right before: a consumer may have joined meanwhile.
            let (_, members) = members_of(&c, group)?;
            refuse_active(group, &members)?;
            c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                .map_err(|e| format!("the broker refused the new offsets of {group} ({e}); nothing was changed unless `ticketflow lag` shows otherwise"))?;
            for row in out["partitions"].as_array_mut().into_iter().flatten() {
                let (t, p) = (row["topic"].as_str().unwrap_or_default().to_string(), row["partition"].as_i64().unwrap_or(0) as i32);
                let now = reader::committed(&c, &t, &[p])?[0];
                if now != row["new"].as_i64() {
                    return Err(format!("after the reset, {group} has {now:?} committed on {t}/{p}, not {}", row["new"]));
                }
            }
            out["executed"] = json!(true);
            Ok(out)
        })
        .await
    }

    /// Plans (and with `execute`, makes) more partitions for a topic.
    pub async fn add_partitions(&self, req: &AddPartitionsRequest) -> Result<Value, String> {
        let r = req.clone();
        let plan = self
            .blocking(move |factory, dataflow| {
                let c = factory.reader(None).map_err(|e| e.to_string())?;
                let existing = existing_topics(&c)?;
                let Some(&current) = existing.get(&r.topic) else {
                    return Err(format!("unknown topic '{}': it does not exist on the broker", r.topic));
                };
                if !dataflow.topics().iter().any(|t| t.name == r.topic) {
                    return Err(format!(
                        "'{}' is not a topic of this Ticketflow dataflow (prefix {}): use your Kafka tooling for other topics",
                        r.topic, dataflow.prefix
                    ));
                }
                if r.count <= current {
                    return Err(format!(
                        "topic {} has {current} partition(s); --count must be more than that (Kafka cannot remove partitions)",
                        r.topic
                    ));
                }
                if r.embedded_broker {
                    return Err(
                        "the embedded broker (nisshi 0.8.1) does not implement CreatePartitions: its topics keep the partition count they were created with (TICKETFLOW_PARTITIONS); adding partitions needs a Kafka cluster (KAFKA_BROKERS)"
                            .to_string(),
                    );
                }
                // Who reads the topic, and what is still waiting there.
                let marks = reader::watermarks(&c, &r.topic)?;
                let ps: Vec<i32> = marks.iter().map(|m| m.0).collect();
                let mut readers = Vec::new();
                for stage in STAGES {
                    if !dataflow.wiring(stage, 1, Duration::ZERO).inputs.iter().any(|i| i.topic == r.topic) {
                        continue;
                    }
                    let group = dataflow.group(stage);
                    let g = factory.reader(Some(&group)).map_err(|e| e.to_string())?;
                    let done = reader::committed(&g, &r.topic, &ps)?;
                    let lag: i64 = marks
                        .iter()
                        .zip(done)
                        .map(|(&(_, low, high), d)| high - d.unwrap_or(low).clamp(low, high))
                        .sum();
                    readers.push(json!({"group": group, "lag": lag}));
                }
                Ok(json!({
                    "topic": r.topic, "partitions": current, "count": r.count,
                    "readers": readers, "executed": false,
                }))
            })
            .await?;
        let waiting: Vec<String> = plan["readers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["lag"].as_i64().unwrap_or(0) > 0)
            .map(|g| format!("{} has {} record(s) left", g["group"].as_str().unwrap_or("?"), g["lag"]))
            .collect();
        if !waiting.is_empty() && !req.force {
            return Err(format!(
                "unsafe while records wait on {}: {}. A record's partition is its key (tenant:ticket) modulo the partition count, so with more partitions a ticket's new events can land on another partition and be processed before its older ones still waiting here. Stop ingest (or the stage writing {}), wait until `ticketflow lag` shows nothing left on it, then add partitions; --force accepts the reordering",
                req.topic,
                waiting.join(", "),
                req.topic
            ));
        }
        if !req.execute {
            return Ok(plan);
        }
        let admin = self.factory.admin().map_err(|e| e.to_string())?;
        let new = NewPartitions::new(&req.topic, req.count as usize);
        let results = admin
            .create_partitions(
                [&new],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await;
        let unsupported = |e: &str| {
            format!(
                "the broker does not support CreatePartitions ({e}); with the embedded broker the partition count is fixed when topics are created"
            )
        };
        match results {
            Err(e) => {
                let text = e.to_string();
                if text.contains("not supported") || text.contains("Unsupported") {
                    return Err(unsupported(&text));
                }
                return Err(format!("adding partitions to {}: {text}", req.topic));
            }
            Ok(rs) => {
                for r in rs {
                    if let Err((_, code)) = r {
                        if matches!(
                            code,
                            RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature
                        ) {
                            return Err(unsupported(&code.to_string()));
                        }
                        return Err(format!("adding partitions to {}: {code}", req.topic));
                    }
                }
            }
        }
        let mut plan = plan;
        plan["executed"] = json!(true);
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::member_name;

    #[test]
    fn members_are_named_by_what_the_broker_reports() {
        assert_eq!(
            member_name("ticketflow-context", "/10.0.0.7", "m-1"),
            "ticketflow-context@10.0.0.7"
        );
        assert_eq!(member_name("ticketflow-context", "", "m-1"), "ticketflow-context");
        assert_eq!(member_name("", "", "rdkafka-4f2c"), "rdkafka-4f2c");
        assert_eq!(member_name("", "/10.0.0.7", "m-1"), "m-1@10.0.0.7");
        assert_eq!(member_name("", "", ""), "a member that reports no id");
    }
}
