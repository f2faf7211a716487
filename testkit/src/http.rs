//! Reading a raw HTTP/1.1 answer, for the callers that speak HTTP on a
//! bare TCP stream (to reach a broker past its connection limits, or to
//! stay free of an HTTP client): its status and its body, a chunked body
//! joined.

/// The status and the body of a whole answer (`Connection: close`, read to
/// its end); `None` when it has no head or no status.
pub fn read_answer(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// A `Transfer-Encoding: chunked` body joined; stops at the last chunk or
/// at a chunk cut short.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_answer_is_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(dechunk("5\r\nab"), "");
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(read_answer(raw), Some((200, "abc".to_string())));
        let raw = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(read_answer(raw), Some((503, "{}".to_string())));
        assert_eq!(read_answer(b"garbage"), None);
    }
}
