//! The dataflow described once, as data: topics, stages, retry tiers,
//! consumer groups (ARCHITECTURE §2). Everything else derives its names
//! from here.

use std::time::Duration;

use processors::{InputKind, InputTopic, StageWiring};

/// The five stages in flow order.
pub const STAGES: [&str; 5] = ["validate", "context", "synthesize", "update", "record"];

#[derive(Debug, Clone)]
pub struct Dataflow {
    pub prefix: String,
    pub partitions: i32,
    pub retry_delays: Vec<Duration>,
}

/// What a topic holds, which decides how long it keeps records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Webhooks and the stages' outputs.
    Stream,
    /// A retry tier.
    Retry,
    /// A dead-letter topic (kept long: people read and retry it).
    DeadLetter,
}

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub kind: TopicKind,
}

impl Dataflow {
    pub fn new(prefix: &str, partitions: i32, retry_delays: Vec<Duration>) -> Self {
        Dataflow {
            prefix: prefix.to_string(),
            partitions,
            retry_delays,
        }
    }

    pub fn webhooks(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// The main topic a stage reads.
    pub fn input_of(&self, stage: &str) -> String {
        let t = match stage {
            "validate" => "webhooks",
            "context" => "validated",
            "synthesize" => "context",
            "update" => "synthesized",
            "record" => "updated",
            other => panic!("unknown stage {other}"),
        };
        format!("{}.{t}", self.prefix)
    }

    /// The topic a stage writes, if it forwards.
    pub fn output_of(&self, stage: &str) -> Option<String> {
        let t = match stage {
            "validate" => "validated",
            "context" => "context",
            "synthesize" => "synthesized",
            "update" => "updated",
            _ => return None,
        };
        Some(format!("{}.{t}", self.prefix))
    }

    pub fn retry_topic(&self, stage: &str, tier: usize) -> String {
        format!("{}.{stage}.retry.{tier}", self.prefix)
    }

    pub fn dlq(&self, stage: &str) -> String {
        format!("{}.{stage}.dlq", self.prefix)
    }

    pub fn group(&self, stage: &str) -> String {
        format!("{}.{stage}", self.prefix)
    }

    /// Every topic of the dataflow.
    pub fn topics(&self) -> Vec<TopicSpec> {
        let mut names = vec![(self.webhooks(), TopicKind::Stream)];
        for stage in STAGES {
            if let Some(o) = self.output_of(stage) {
                names.push((o, TopicKind::Stream));
            }
            for tier in 1..=self.retry_delays.len() {
                names.push((self.retry_topic(stage, tier), TopicKind::Retry));
            }
            names.push((self.dlq(stage), TopicKind::DeadLetter));
        }
        names
            .into_iter()
            .map(|(name, kind)| TopicSpec {
                name,
                partitions: self.partitions,
                kind,
            })
            .collect()
    }

    /// The runtime wiring of one stage. The record stage also reads every
    /// other stage's dead-letter topic, to record those jobs as failed.
    pub fn wiring(&self, stage: &'static str, max_in_flight: usize, drain_timeout: Duration) -> StageWiring {
        let mut inputs = vec![InputTopic {
            topic: self.input_of(stage),
            kind: InputKind::Primary,
        }];
        if stage == "record" {
            for other in STAGES.iter().filter(|s| **s != "record") {
                inputs.push(InputTopic {
                    topic: self.dlq(other),
                    kind: InputKind::Primary,
                });
            }
        }
        let retry_tiers: Vec<(String, Duration)> = self
            .retry_delays
            .iter()
            .enumerate()
            .map(|(i, d)| (self.retry_topic(stage, i + 1), *d))
            .collect();
        for (i, (topic, _)) in retry_tiers.iter().enumerate() {
            inputs.push(InputTopic {
                topic: topic.clone(),
                kind: InputKind::RetryTier(i as u32 + 1),
            });
        }
        StageWiring {
            stage,
            group: self.group(stage),
            inputs,
            output: self.output_of(stage),
            retry_tiers,
            dlq: self.dlq(stage),
            max_in_flight,
            max_in_flight_bytes: 64 << 20,
            drain_timeout,
            probe: Default::default(),
        }
    }

    /// The stage whose dead-letter topic this is.
    pub fn stage_of_dlq<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&format!("{}.", self.prefix))?.strip_suffix(".dlq")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let d = Dataflow::new(
            "ticketflow",
            3,
            vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
            ],
        );
        let names: Vec<String> = d.topics().into_iter().map(|t| t.name).collect();
        for n in [
            "ticketflow.webhooks",
            "ticketflow.validated",
            "ticketflow.context",
            "ticketflow.synthesized",
            "ticketflow.updated",
            "ticketflow.update.retry.3",
            "ticketflow.record.dlq",
            "ticketflow.validate.dlq",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing");
        }
        assert_eq!(names.len(), 1 + 4 + 5 * 4);
        let w = d.wiring("record", 10, Duration::from_secs(1));
        assert_eq!(w.group, "ticketflow.record");
        assert!(w.inputs.iter().any(|i| i.topic == "ticketflow.update.dlq"));
        assert!(
            !w.inputs.iter().any(|i| i.topic == "ticketflow.record.dlq"),
            "record must not consume its own DLQ"
        );
        assert_eq!(
            w.inputs
                .iter()
                .filter(|i| matches!(i.kind, InputKind::RetryTier(_)))
                .count(),
            3
        );
        assert_eq!(d.stage_of_dlq("ticketflow.update.dlq"), Some("update"));
    }
}
