//! The LLM's chat-completions answer (`sinks::llm::parse_completion`, and
//! `status_error` for non-2xx bodies): any bytes, never a panic; an
//! accepted completion always has text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinks::llm::{parse_completion, status_error};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse_completion(data) {
        assert!(!c.text.trim().is_empty());
    }
    let _ = status_error(429, None, data);
});
