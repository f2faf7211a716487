//! Screen sharing: the broker carries the offer, the answer and the
//! pointer inside `signal` (the convention of proto/README.md, "Screen
//! sharing") and gives both seats the configured STUN/TURN servers in
//! `joined`, TURN credentials made short-lived with `turn_secret`. The
//! media itself is tested in Chromium (tests/browser/e2e.mjs). In each
//! storage mode.

use serde_json::{Value, json};

use crate::util::*;

const SECRET: &str = "a-turn-secret-of-32-characters!!";

fn ice(mode_extra: &str) -> String {
    format!(
        "{mode_extra}\nturn_secret = \"{SECRET}\"\nturn_ttl = \"2h\"\n\
         [[ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n\
         [[ice_servers]]\nurls = [\"turn:turn.example.org:3478?transport=udp\", \"turns:turn.example.org:5349\"]\n\
         [[ice_servers]]\nurls = [\"turn:fixed.example.org:3478\"]\nusername = \"fixed\"\ncredential = \"fixed-password\"\n"
    )
}

/// Checks the servers a seat of `code` got: the STUN one as it is, the
/// TURN one with a credential valid for `turn_ttl`, the fixed one as set.
fn check_servers(joined: &Value, code: &str) {
    let servers = joined["ice_servers"].as_array().expect("ice_servers");
    assert_eq!(servers.len(), 3, "{joined}");
    assert_eq!(servers[0], json!({"urls": ["stun:stun.example.org:3478"]}));
    let username = servers[1]["username"].as_str().unwrap();
    let (expiry, who) = username.split_once(':').unwrap();
    assert_eq!(who, code, "{username}");
    let now = chrono::Utc::now().timestamp();
    let expiry: i64 = expiry.parse().unwrap();
    assert!(
        (now + 7190..=now + 7210).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(
        servers[1]["credential"],
        casebroker::ice::turn_credential(SECRET, username)
    );
    assert_eq!(
        servers[2],
        json!({"urls": ["turn:fixed.example.org:3478"], "username": "fixed", "credential": "fixed-password"})
    );
}

async fn both_seats_get_the_ice_servers_and_the_share_is_relayed(mode: Mode) {
    let server = TestServer::with_extra_in(mode, &ice("")).await;
    let (ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    check_servers(&joined, &code);
    let mut bob = server.agent(BOB).await;
    let agent_joined = bob
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    check_servers(&agent_joined, &code);
    // A customer coming back gets them again.
    let token = joined["resume_token"].as_str().unwrap().to_string();
    ana.close().await;
    let mut again = server.customer().await;
    let rejoined = again
        .ok(
            json!({"type": "join", "code": code, "resume_token": token}),
            "joined",
        )
        .await;
    check_servers(&rejoined, &code);

    // The offer (an SDP of a few KiB), the answer and the pointer cross
    // unchanged, each to the other seat alone.
    let sdp = format!(
        "v=0\r\n{}",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host\r\n".repeat(80)
    );
    let offer = json!({"screen": "offer", "id": "share-1", "sdp": sdp});
    again
        .ok(json!({"type": "signal", "data": offer}), "sent")
        .await;
    let got = bob.wait_type("signal").await;
    assert_eq!(got["data"], offer);
    assert_eq!(got["from"], json!({"role": "customer"}));
    let answer = json!({"screen": "answer", "id": "share-1", "sdp": "v=0\r\n"});
    bob.ok(
        json!({"type": "signal", "code": code, "data": answer}),
        "sent",
    )
    .await;
    assert_eq!(again.wait_type("signal").await["data"], answer);
    let pointer = json!({"screen": "pointer", "id": "share-1", "x": 0.25, "y": 0.75});
    bob.ok(
        json!({"type": "signal", "code": code, "data": pointer}),
        "sent",
    )
    .await;
    assert_eq!(again.wait_type("signal").await["data"], pointer);
    // Over the relay's limit: refused, nothing relayed.
    let huge = json!({"screen": "offer", "id": "share-2", "sdp": "x".repeat(40 * 1024)});
    again
        .err(json!({"type": "signal", "data": huge}), "too_large")
        .await;
    bob.sync().await;
    assert!(
        !bob.pending().iter().any(|m| m["type"] == "signal"),
        "{:?}",
        bob.pending()
    );
}

in_every_mode!(both_seats_get_the_ice_servers_and_the_share_is_relayed);

async fn without_ice_servers_joined_has_none(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (_ana, joined) = request_help(&server, MODULE).await;
    assert!(joined.get("ice_servers").is_none(), "{joined}");
}

in_every_mode!(without_ice_servers_joined_has_none);

#[test]
fn bad_ice_settings_are_refused_with_their_key() {
    for (extra, key) in [
        (
            "[[ice_servers]]\nurls = [\"http://stun.example.org\"]\n",
            "ice_servers[0]",
        ),
        ("[[ice_servers]]\nurls = []\n", "ice_servers[0]"),
        (
            "[[ice_servers]]\nurls = [\"turn:t.example.org\"]\nusername = \"u\"\n",
            "ice_servers[0]",
        ),
        ("turn_secret = \"short\"\n", "turn_secret"),
        ("turn_ttl = \"10s\"\n", "turn_ttl"),
    ] {
        let e = casebroker::config::Config::from_toml(&config_text(extra))
            .err()
            .unwrap_or_else(|| panic!("{extra} was taken"))
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
}
