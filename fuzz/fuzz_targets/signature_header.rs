//! Standard Webhooks header parsing and verification: any `webhook-id`,
//! `webhook-timestamp`, `webhook-signature` and secret text, never a panic;
//! what `sign` produces always verifies, and a verification never succeeds
//! for a signature made with another secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinks::Secret;
use ticketflow_fuzz::signature::{parse_signatures, parse_timestamp, secret_key, sign, verify, MAX_SIGNATURES};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Fields separated by newlines: id, timestamp, signature header, secret, body.
    let mut parts = text.splitn(5, '\n');
    let id = parts.next().unwrap_or("");
    let ts = parts.next().unwrap_or("");
    let sigs = parts.next().unwrap_or("");
    let secret = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();

    assert!(parse_signatures(sigs).len() <= MAX_SIGNATURES);
    let _ = secret_key(secret);
    let now = parse_timestamp(ts).unwrap_or(0);
    let secrets = [Secret::new(secret), Secret::new(SECRET)];
    let _ = verify(secrets.iter(), id, ts, sigs, body, now, 300);

    if let Ok(ts_num) = parse_timestamp(ts) {
        // A sender signs the timestamp it sends: its decimal text.
        let ts = ts_num.to_string();
        let good = sign(SECRET, id, ts_num, body).expect("a valid secret signs");
        let mine = [Secret::new(SECRET)];
        verify(mine.iter(), id, &ts, &good, body, ts_num, 300).expect("own signature verifies");
        let header = format!("{sigs} {good}");
        let tried = header
            .split(' ')
            .filter(|s| s.strip_prefix("v1,").is_some_and(|r| !r.is_empty()))
            .count();
        if tried <= MAX_SIGNATURES {
            verify(mine.iter(), id, &ts, &header, body, ts_num, 300).expect("among other signatures");
        }
        let other = [Secret::new(OTHER)];
        assert!(verify(other.iter(), id, &ts, &good, body, ts_num, 300).is_err());
    }
});
