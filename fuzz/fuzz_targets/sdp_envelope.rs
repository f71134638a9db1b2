//! The ServiceDesk Plus `response_status` envelope
//! (`sinks::servicedesk::parse_envelope`): any bytes, never a panic; a
//! success is never reported for a body that carries a failure code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinks::servicedesk::{parse_envelope, Envelope};

fuzz_target!(|data: &[u8]| {
    let Ok((_, envelope)) = parse_envelope(data) else {
        return;
    };
    if let Envelope::Failure { statuses, .. } = &envelope {
        assert!(statuses.iter().any(|s| !s.is_success()));
    }
    if matches!(envelope, Envelope::Success) {
        let (body, _) = parse_envelope(data).expect("parsed once");
        let statuses = sinks::servicedesk::envelope::response_statuses(&body);
        assert!(!statuses.is_empty() && statuses.iter().all(|s| s.is_success()));
    }
});
