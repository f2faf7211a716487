//! The cheap receive path: reads the few fields the hot loops need (`type`,
//! `seq`, `id`, a case's `code`) by scanning the bytes of a text frame
//! instead of parsing JSON. It relies on the broker's field order (a
//! message's `id` and `type` come first, an event's `seq` before its case,
//! a case's `code` first), and on JSON escaping, which keeps a key pattern
//! such as `"seq":` from appearing inside a string value.

/// Position just after the first occurrence of `pat` in `hay`.
fn after(hay: &[u8], pat: &[u8]) -> Option<usize> {
    let first = *pat.first()?;
    let last_start = hay.len().checked_sub(pat.len())?;
    let mut i = 0;
    while i <= last_start {
        if hay[i] == first && &hay[i..i + pat.len()] == pat {
            return Some(i + pat.len());
        }
        i += 1;
    }
    None
}

/// The unsigned integer right after the first `pat`.
pub fn u64_after(hay: &[u8], pat: &[u8]) -> Option<u64> {
    let start = after(hay, pat)?;
    let mut n: u64 = 0;
    let mut digits = 0;
    for &b in &hay[start..] {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// The string value (without escapes) right after the first `pat`, which
/// must end with the opening quote.
pub fn str_after<'a>(hay: &'a [u8], pat: &[u8]) -> Option<&'a str> {
    let start = after(hay, pat)?;
    let len = hay[start..].iter().position(|&b| b == b'"' || b == b'\\')?;
    std::str::from_utf8(&hay[start..start + len]).ok()
}

/// The message's `type`.
pub fn msg_type(frame: &[u8]) -> Option<&str> {
    str_after(frame, b"\"type\":\"")
}

/// True for a queue `event`. Events carry no `id`, so `type` comes first.
pub fn is_event(frame: &[u8]) -> bool {
    frame.starts_with(b"{\"type\":\"event\"")
}

/// An event's `seq`.
pub fn seq(frame: &[u8]) -> Option<u64> {
    u64_after(frame, b"\"seq\":")
}

/// A reply's numeric `id`.
pub fn id(frame: &[u8]) -> Option<u64> {
    if frame.starts_with(b"{\"id\":") {
        u64_after(frame, b"{\"id\":")
    } else {
        None
    }
}

/// The first `code` string: a case reply's session code (the case object
/// starts with it), or a `deleted` reply's code.
pub fn code(frame: &[u8]) -> Option<&str> {
    str_after(frame, b"\"code\":\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebroker::protocol::{Action, ServerMsg};

    #[test]
    fn reads_a_real_event() {
        let case: casebroker::case::CaseView = serde_json::from_value(serde_json::json!({
            "code": "s12-345-678", "company": "load", "group": "support",
            "name": "x \"seq\":9 y", "description": "", "customer": {},
            "source": "manual", "created_by": "admin", "assignee": null,
            "status": "new", "customer_connected": false, "supporter_connected": false,
            "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-01T00:00:00.000Z",
            "assigned_at": null, "expires_at": "2024-01-02T00:00:00.000Z",
            "closed_at": null, "closed_by": null
        }))
        .expect("a case view");
        let text = ServerMsg::Event {
            epoch: "abc".into(),
            seq: 4711,
            action: Action::Created,
            case: Box::new(case),
        }
        .to_text(None);
        let b = text.as_bytes();
        assert!(is_event(b), "{text}");
        assert_eq!(seq(b), Some(4711));
        assert_eq!(msg_type(b), Some("event"));
        assert_eq!(code(b), Some("s12-345-678"));
        assert_eq!(id(b), None);
    }

    #[test]
    fn reads_replies() {
        let b = br#"{"id":42,"type":"deleted","code":"s98-765-432"}"#;
        assert_eq!(id(b), Some(42));
        assert_eq!(msg_type(b), Some("deleted"));
        assert_eq!(code(b), Some("s98-765-432"));
        assert!(!is_event(b));
        assert_eq!(u64_after(b"{\"seq\":}", b"\"seq\":"), None);
        assert_eq!(
            u64_after(b"{\"seq\":99999999999999999999999}", b"\"seq\":"),
            None
        );
    }
}
