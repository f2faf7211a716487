//! ICE servers (STUN, TURN) for screen sharing: the config's list, given to
//! both seats in `joined`. With `turn_secret`, TURN servers listed without
//! credentials get short-lived ones by the TURN REST convention coturn
//! follows (`use-auth-secret`): the username is `<expiry unix time>:<session
//! code>`, the credential the base64 of HMAC-SHA1(secret, username).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::case::SessionCode;

/// Servers the config may list, and URLs each.
pub const MAX_SERVERS: usize = 8;
pub const MAX_URLS: usize = 8;

/// `[[ice_servers]]` in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<crate::config::Secret>,
}

/// One server as a browser's `RTCPeerConnection` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServerConfig {
    /// What is wrong with the entry, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.urls.is_empty() || self.urls.len() > MAX_URLS {
            return Err(format!("urls: 1 to {MAX_URLS} URLs"));
        }
        for url in &self.urls {
            let known = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| url.starts_with(s));
            if !known || url.len() > 256 || url.chars().any(|c| c.is_whitespace()) {
                return Err(format!(
                    "urls: \"{url}\" is not a stun:, stuns:, turn: or turns: URL"
                ));
            }
        }
        if self.username.is_some() != self.credential.is_some() {
            return Err("username and credential go together".into());
        }
        Ok(())
    }

    fn is_turn(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("turn"))
    }
}

/// The servers for one session at `now` (Unix seconds).
pub fn for_session(
    servers: &[IceServerConfig],
    secret: Option<&str>,
    ttl_secs: u64,
    code: SessionCode,
    now: u64,
) -> Vec<IceServer> {
    servers
        .iter()
        .map(|s| {
            let (username, credential) = match (&s.username, &s.credential, secret) {
                (Some(u), Some(c), _) => (Some(u.clone()), Some(c.0.clone())),
                (None, None, Some(secret)) if s.is_turn() => {
                    let username = format!("{}:{code}", now + ttl_secs);
                    (
                        Some(username.clone()),
                        Some(turn_credential(secret, &username)),
                    )
                }
                _ => (None, None),
            };
            IceServer {
                urls: s.urls.clone(),
                username,
                credential,
            }
        })
        .collect()
}

/// base64(HMAC-SHA1(secret, username)).
pub fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turn_credential_follows_the_rest_convention() {
        // RFC 2202, test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        assert_eq!(
            turn_credential("Jefe", "what do ya want for nothing?"),
            base64::engine::general_purpose::STANDARD
                .encode(hex::decode("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap())
        );
    }

    #[test]
    fn turn_servers_without_credentials_get_short_lived_ones() {
        let code = SessionCode::parse("s12-345-678").unwrap();
        let servers = [
            IceServerConfig {
                urls: vec!["stun:stun.example.org:3478".into()],
                username: None,
                credential: None,
            },
            IceServerConfig {
                urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
                username: None,
                credential: None,
            },
            IceServerConfig {
                urls: vec!["turns:fixed.example.org:5349".into()],
                username: Some("u".into()),
                credential: Some(crate::config::Secret("p".into())),
            },
        ];
        let got = for_session(&servers, Some("s3cret"), 3600, code, 1_000);
        assert_eq!(got[0].username, None);
        assert_eq!(got[1].username.as_deref(), Some("4600:s12-345-678"));
        assert_eq!(
            got[1].credential.as_deref(),
            Some(turn_credential("s3cret", "4600:s12-345-678").as_str())
        );
        assert_eq!(got[2].username.as_deref(), Some("u"));
        assert_eq!(got[2].credential.as_deref(), Some("p"));
        // Without a secret, a bare TURN server is given as it is.
        let plain = for_session(&servers, None, 3600, code, 1_000);
        assert_eq!(plain[1].username, None);
    }
}
