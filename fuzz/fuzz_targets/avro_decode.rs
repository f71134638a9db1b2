//! The Avro single-object decoder (`schemas::Codec::decode`) for every
//! record type: records come back from topics any Kafka client can write
//! to. The first byte picks a registered writer schema whose header is put
//! in front of the rest (so the fuzzer reaches the datum decoder), or,
//! past the last schema, the bytes are decoded as they are. Whatever
//! decodes must encode again, and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::{
    Codec, FailureEnvelope, GatheredContext, Record, SynthesizedEnhancement, TicketUpdated, ValidatedJob,
    WebhookReceived, SINGLE_OBJECT_MARKER,
};

fn roundtrip<R: Record>(codec: &Codec, bytes: &[u8]) {
    let Ok(record) = codec.decode::<R>(bytes) else {
        return;
    };
    let again = codec.encode(&record).expect("a decoded record encodes");
    let back = codec.decode::<R>(&again).expect("its encoding decodes");
    // Compared as JSON values: map entries encode in hash order (so bytes
    // differ between encodes) and NaN is not equal to itself.
    assert_eq!(
        serde_json::to_value(&record).ok(),
        serde_json::to_value(&back).ok(),
        "{}: decode . encode . decode is the identity",
        R::NAME
    );
}

fuzz_target!(|data: &[u8]| {
    let codec = Codec::builtin();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut fingerprints: Vec<_> = codec.fingerprints().map(|(f, _)| *f).collect();
    fingerprints.sort();
    let bytes = match fingerprints.get(usize::from(pick)) {
        Some(f) => {
            let mut b = SINGLE_OBJECT_MARKER.to_vec();
            b.extend_from_slice(f);
            b.extend_from_slice(rest);
            b
        }
        None => rest.to_vec(),
    };
    let _ = codec.record_name(&bytes);
    roundtrip::<WebhookReceived>(codec, &bytes);
    roundtrip::<ValidatedJob>(codec, &bytes);
    roundtrip::<GatheredContext>(codec, &bytes);
    roundtrip::<SynthesizedEnhancement>(codec, &bytes);
    roundtrip::<TicketUpdated>(codec, &bytes);
    roundtrip::<FailureEnvelope>(codec, &bytes);
});
