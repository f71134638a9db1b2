//! Record headers (ARCHITECTURE §3): `correlation_id`, `tenant_id`,
//! `job_id`, `traceparent`, `attempt` on every record; on failure records
//! also `error`, `error_class`, `failed_stage`, `original_topic`,
//! `original_partition`, `original_offset`, `not_before`.

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// The identity headers every record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobHeaders {
    pub correlation_id: String,
    pub tenant_id: String,
    pub job_id: String,
    pub traceparent: String,
    pub attempt: i32,
    /// Set by `ticketflow replay`: where the replayed webhook was read
    /// (`topic/partition@offset`). A replayed job is an operator's explicit
    /// request to enhance the ticket again, so validate does not treat it as
    /// a duplicate `request_created`.
    pub replayed_from: Option<String>,
}

/// Why a record's headers are unusable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("record header '{0}' is missing or not UTF-8")]
pub struct MissingHeader(pub &'static str);

/// Reads one header as UTF-8.
pub fn get<'a>(headers: Option<&'a rdkafka::message::BorrowedHeaders>, name: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads one header from owned headers.
pub fn get_owned<'a>(headers: Option<&'a OwnedHeaders>, name: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl JobHeaders {
    pub fn from_kafka(headers: Option<&OwnedHeaders>) -> Result<Self, MissingHeader> {
        let need = |name: &'static str| {
            get_owned(headers, name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or(MissingHeader(name))
        };
        Ok(JobHeaders {
            correlation_id: need("correlation_id")?,
            tenant_id: need("tenant_id")?,
            job_id: need("job_id")?,
            traceparent: need("traceparent")?,
            attempt: get_owned(headers, "attempt").and_then(|a| a.parse().ok()).unwrap_or(1),
            replayed_from: get_owned(headers, "replayed_from").map(str::to_string),
        })
    }

    /// The headers for the next hop: same trace, a new span id.
    pub fn next_hop(&self, attempt: i32) -> JobHeaders {
        JobHeaders {
            traceparent: child_traceparent(&self.traceparent),
            attempt,
            ..self.clone()
        }
    }

    pub fn to_kafka(&self) -> OwnedHeaders {
        let attempt = self.attempt.to_string();
        let headers = OwnedHeaders::new_with_capacity(11)
            .insert(Header {
                key: "correlation_id",
                value: Some(self.correlation_id.as_str()),
            })
            .insert(Header {
                key: "tenant_id",
                value: Some(self.tenant_id.as_str()),
            })
            .insert(Header {
                key: "job_id",
                value: Some(self.job_id.as_str()),
            })
            .insert(Header {
                key: "traceparent",
                value: Some(self.traceparent.as_str()),
            })
            .insert(Header {
                key: "attempt",
                value: Some(attempt.as_str()),
            });
        match &self.replayed_from {
            Some(from) => headers.insert(Header {
                key: "replayed_from",
                value: Some(from.as_str()),
            }),
            None => headers,
        }
    }
}

/// A new W3C `traceparent` that starts a trace.
pub fn new_traceparent() -> String {
    format!(
        "00-{:032x}-{:016x}-01",
        rand::random::<u128>().max(1),
        rand::random::<u64>().max(1)
    )
}

/// A `traceparent` in the same trace with a fresh span id; an unreadable
/// parent starts a new trace.
pub fn child_traceparent(parent: &str) -> String {
    let parts: Vec<&str> = parent.split('-').collect();
    if parts.len() == 4 && parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("00-{}-{:016x}-{}", parts[1], rand::random::<u64>().max(1), parts[3])
    } else {
        new_traceparent()
    }
}

/// Error headers added to a failure record.
pub struct FailureHeaders<'a> {
    pub error: &'a str,
    pub error_class: &'a str,
    pub failed_stage: &'a str,
    pub original_topic: &'a str,
    pub original_partition: i32,
    pub original_offset: i64,
    pub not_before_ms: Option<i64>,
}

impl FailureHeaders<'_> {
    pub fn append_to(&self, headers: OwnedHeaders) -> OwnedHeaders {
        let partition = self.original_partition.to_string();
        let offset = self.original_offset.to_string();
        let error: String = self.error.chars().take(1000).collect();
        let mut h = headers
            .insert(Header {
                key: "error",
                value: Some(error.as_str()),
            })
            .insert(Header {
                key: "error_class",
                value: Some(self.error_class),
            })
            .insert(Header {
                key: "failed_stage",
                value: Some(self.failed_stage),
            })
            .insert(Header {
                key: "original_topic",
                value: Some(self.original_topic),
            })
            .insert(Header {
                key: "original_partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "original_offset",
                value: Some(offset.as_str()),
            });
        if let Some(nb) = self.not_before_ms {
            let nb = nb.to_string();
            h = h.insert(Header {
                key: "not_before",
                value: Some(nb.as_str()),
            });
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_trace_continues() {
        let h = JobHeaders {
            correlation_id: "c".into(),
            tenant_id: "t".into(),
            job_id: "j".into(),
            traceparent: new_traceparent(),
            attempt: 2,
            replayed_from: Some("ticketflow.webhooks/0@7".into()),
        };
        let owned = h.to_kafka();
        assert_eq!(JobHeaders::from_kafka(Some(&owned)).unwrap(), h);
        let next = h.next_hop(1);
        assert_eq!(next.traceparent[3..35], h.traceparent[3..35], "same trace id");
        assert_ne!(next.traceparent, h.traceparent, "new span id");
        assert!(child_traceparent("garbage").starts_with("00-"));
    }

    #[test]
    fn missing_header_is_named() {
        let owned = OwnedHeaders::new().insert(Header {
            key: "tenant_id",
            value: Some("t"),
        });
        let e = JobHeaders::from_kafka(Some(&owned)).unwrap_err();
        assert_eq!(e.0, "correlation_id");
        assert!(JobHeaders::from_kafka(None).is_err());
    }
}
