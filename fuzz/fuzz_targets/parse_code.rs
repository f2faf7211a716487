//! Fuzzes the session-code parser: it never panics, and a parsed code
//! prints in the canonical form that parses back to itself.
#![no_main]

use casebroker::case::SessionCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(code) = SessionCode::parse(text) {
        let shown = code.to_string();
        assert_eq!(SessionCode::parse(&shown), Some(code));
        assert!(shown.starts_with('s'));
    }
});
