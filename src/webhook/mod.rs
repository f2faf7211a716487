//! Webhooks (Standard Webhooks, `standardwebhooks.com`): what an endpoint
//! and a delivery are, how a message is signed, and which URLs may be
//! called. The core keeps endpoints and deliveries as changes of the
//! company (journaled, shared by a cluster); [`sender`] makes the calls.

pub mod sender;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::case::SessionCode;

/// The event types an endpoint may ask for (`*`: all but `chat.message`,
/// which is sent only when named).
pub const TYPES: [&str; 6] = [
    "case.created",
    "case.updated",
    "case.closed",
    "case.expired",
    "case.deleted",
    "chat.message",
];

/// An endpoint as stored and replayed. The secret is kept as given out
/// (`whsec_<base64>`): signing needs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub disabled: bool,
    /// Why the broker disabled it (a 410), if it did.
    pub disabled_reason: Option<String>,
    pub secret: String,
    /// The secret before the last rotation: it signs too until
    /// `previous_until` (Unix ms), so receivers can switch keys.
    pub previous_secret: Option<String>,
    pub previous_until: i64,
    pub removed: bool,
    /// Declared in the config file: only `disabled` changes at run time.
    pub from_config: bool,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// How long the secret before a rotation keeps signing.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

impl WebhookRecord {
    /// The secrets that sign a call made at `now` (Unix ms): the current
    /// one, and the previous one during its overlap.
    pub fn signing_secrets(&self, now: i64) -> Vec<String> {
        let mut out = vec![self.secret.clone()];
        if let Some(p) = &self.previous_secret
            && now < self.previous_until
        {
            out.push(p.clone());
        }
        out
    }

    /// True when the endpoint wants events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        !self.disabled
            && !self.removed
            && self
                .events
                .iter()
                .any(|e| e == kind || (e == "*" && kind != "chat.message"))
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its turn or its next attempt.
    Pending,
    /// Answered 2xx.
    Succeeded,
    /// Every attempt failed, or the endpoint answered 410.
    Failed,
}

/// One message to one endpoint, as stored and replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique in the company, in the order deliveries were made.
    pub id: u64,
    pub endpoint: String,
    /// `webhook-id`: the same on every attempt.
    pub message_id: String,
    /// The event type.
    pub kind: String,
    pub seq: u64,
    pub code: SessionCode,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    pub attempts: u32,
    pub status: Status,
    pub last_status_code: Option<u16>,
    /// Unix ms of the next attempt.
    pub next_attempt_at: i64,
}

/// A company's endpoints and pending deliveries, as an image keeps them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoredHooks {
    pub endpoints: Vec<WebhookRecord>,
    pub pending: Vec<Delivery>,
}

/// What an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// Try again at this time (Unix ms).
    Retry(i64),
    /// No attempt left.
    GaveUp,
    /// 410: the endpoint is disabled.
    Gone,
}

/// True for `whsec_` and the base64 of at least 16 bytes.
pub fn valid_secret(secret: &str) -> bool {
    use base64::Engine;
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|k| k.len() >= 16)
}

/// A new endpoint secret: `whsec_` and 24 random bytes, base64.
pub fn new_secret() -> String {
    use base64::Engine;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    )
}

/// The `webhook-signature` of a message: `v1,<base64 HMAC-SHA256>` of
/// `{id}.{timestamp}.{body}` keyed by each secret's bytes, space-separated
/// (a receiver accepts the call when one of them verifies). HMAC-SHA256 of
/// the RustCrypto crates, which use the CPU's SHA instructions where it
/// has them.
pub fn sign(secrets: &[String], message_id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let b64 = &base64::engine::general_purpose::STANDARD;
    let timestamp = timestamp.to_string();
    let mut out = String::with_capacity(secrets.len() * 48);
    for secret in secrets {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|k| b64.decode(k).ok())
            .expect("a secret made by the broker decodes");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        b64.encode_string(mac.finalize().into_bytes(), &mut out);
    }
    out
}

/// Why a URL may not be an endpoint, if it may not.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url must be http:// or https://".into());
    }
    if url.len() > 2048 {
        return Err("url must be at most 2048 characters".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    let Some(host) = parsed.host() else {
        return Err("url must name a host".into());
    };
    let ip = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(d) => {
            if !allow_private && (d == "localhost" || d.ends_with(".localhost")) {
                return Err(private_url());
            }
            None
        }
    };
    if let Some(ip) = ip
        && !allow_private
        && !public(ip)
    {
        return Err(private_url());
    }
    Ok(())
}

fn private_url() -> String {
    "url: loopback, private, link-local and metadata addresses are refused (webhook_allow_private)"
        .into()
}

/// True for an address on the public internet: not loopback, private,
/// link-local (cloud metadata), shared, multicast, unspecified or
/// documentation.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}

/// The body of a case event: `{"type","timestamp","data":{company, epoch,
/// seq, case}}`, written straight from the case (no JSON tree in
/// between).
pub fn case_body(
    kind: &str,
    company: &str,
    epoch: &str,
    seq: u64,
    case: &impl Serialize,
) -> String {
    #[derive(Serialize)]
    struct Body<'a, C> {
        #[serde(rename = "type")]
        kind: &'a str,
        timestamp: String,
        data: Data<'a, C>,
    }
    #[derive(Serialize)]
    struct Data<'a, C> {
        company: &'a str,
        epoch: &'a str,
        seq: u64,
        case: &'a C,
    }
    serde_json::to_string(&Body {
        kind,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        data: Data {
            company,
            epoch,
            seq,
            case,
        },
    })
    .expect("a case serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_the_standard_webhooks_library_under_each_secret() {
        let (a, b) = (new_secret(), new_secret());
        let body = r#"{"type":"case.created","data":{"seq":1}}"#;
        let ts = chrono::Utc::now().timestamp();
        let signature = sign(&[a.clone(), b.clone()], "msg_e_1", ts, body);
        assert_eq!(signature.split(' ').count(), 2);
        assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "msg_e_1".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        for secret in [&a, &b] {
            let w = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
            w.verify(body.as_bytes(), &headers).expect("verifies");
            assert_eq!(
                w.sign("msg_e_1", ts, body.as_bytes()).unwrap(),
                sign(std::slice::from_ref(secret), "msg_e_1", ts, body)
            );
        }
        let other = standardwebhooks::Webhook::new(&new_secret()).unwrap();
        assert!(other.verify(body.as_bytes(), &headers).is_err());
        let tampered = body.replace('1', "2");
        let w = standardwebhooks::Webhook::new(&a).unwrap();
        assert!(w.verify(tampered.as_bytes(), &headers).is_err());
    }
}
