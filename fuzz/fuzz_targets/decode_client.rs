//! Fuzzes the client message decoder: any bytes a client may send in a text
//! frame must decode or fail cleanly, and what decodes must re-serialise.
#![no_main]

use casebroker::protocol::decode_client;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = decode_client(text) {
        let again = serde_json::to_string(&env).expect("a decoded message serialises");
        decode_client(&again).expect("a re-serialised message decodes");
    }
});
