//! Code guessing: guesses past the quota are answered `rate_limited`, a
//! guessing address learns nothing while another address joins, failed
//! joins over the threshold raise the alarm, and behind a trusted proxy
//! guesses count per forwarded address while a forwarded-for header from an
//! untrusted peer is ignored.

use super::*;

static GUESS: AtomicU64 = AtomicU64::new(1);

/// A well-formed session code that is not `real`.
fn guess(real: &str) -> String {
    let digits = |c: &str| c.chars().filter(char::is_ascii_digit).collect::<String>();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    loop {
        let n = GUESS.fetch_add(1, Ordering::Relaxed);
        let x = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(seed) % 100_000_000;
        let d = format!("{x:08}");
        if d != digits(real) {
            return format!("s{}-{}-{}", &d[..2], &d[2..5], &d[5..]);
        }
    }
}

/// Joins unknown codes on `c` until one is answered `rate_limited` (at
/// most 10 tries); returns the answers.
async fn guess_until_limited(c: &mut WsClient, real: &str) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..10 {
        let a = outcome(
            &c.request(json!({"type": "join", "code": guess(real)}))
                .await,
        );
        answers.push(a.clone());
        if a == "rate_limited" {
            return answers;
        }
        assert_eq!(a, "not_found", "answers so far: {answers:?}");
    }
    panic!("10 wrong guesses and never rate_limited: {answers:?}");
}

async fn real_code(server: &TestServer) -> (WsClient, String) {
    let mut alice = server.agent(ALICE).await;
    let case = create_case(&mut alice, "support").await;
    let code = case["code"].as_str().unwrap().to_string();
    (alice, code)
}

// 6. Code guessing ------------------------------------------------------------------

#[tokio::test]
async fn code_guesses_past_the_quota_are_answered_rate_limited() {
    let server = TestServer::with_config(config_with("failed_joins_per_minute = 3")).await;
    let (_alice, real) = real_code(&server).await;
    let mut guesser = customer_from(&server, None, &[]).await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let reply = guesser
            .request(json!({"type": "join", "code": guess(&real)}))
            .await;
        answers.push(outcome(&reply));
    }
    assert_eq!(
        answers,
        ["not_found", "not_found", "not_found", "rate_limited"],
        "failed_joins_per_minute = 3: three wrong guesses are answered, the fourth is not"
    );
}

#[tokio::test]
async fn a_guessing_address_learns_nothing_while_another_address_joins() {
    let server = TestServer::with_config(config_with("failed_joins_per_minute = 3")).await;
    let (_alice, real) = real_code(&server).await;
    let before = scrape(&server).await;
    let not_found0 = value(&before, &join_failures("not_found"));
    let limited0 = value(&before, &join_failures("rate_limited"));

    let mut guesser = customer_from(&server, Some(LOCAL), &[]).await;
    let answers = guess_until_limited(&mut guesser, &real).await;
    assert!(answers.len() >= 4, "three guesses pass first: {answers:?}");

    // The real code is refused alike, on this and on a new connection
    // from the same address.
    let reply = guesser.request(json!({"type": "join", "code": real})).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    let mut again = customer_from(&server, Some(LOCAL), &[]).await;
    let reply = again.request(json!({"type": "join", "code": real})).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");

    // A customer from another address joins the real code.
    let mut honest = customer_from(&server, Some(OTHER), &[]).await;
    let joined = honest
        .request(json!({"type": "join", "code": real, "name": "Ana"}))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["code"], real.as_str());

    let after = scrape(&server).await;
    assert!(
        value(&after, &join_failures("not_found")) >= not_found0 + 3.0,
        "{after}"
    );
    assert!(
        value(&after, &join_failures("rate_limited")) >= limited0 + 3.0,
        "{after}"
    );
}

// 7. Alarm ----------------------------------------------------------------------------

#[tokio::test]
async fn failed_joins_over_the_alarm_threshold_raise_the_alarm() {
    const ALARM: &str = "casebroker_join_failure_alarm";
    let server = TestServer::with_config(config_with("failed_join_alarm_per_minute = 2")).await;
    let (_alice, real) = real_code(&server).await;
    assert_eq!(value(&scrape(&server).await, ALARM), 0.0);
    let mut guesser = customer_from(&server, None, &[]).await;
    for i in 0..3 {
        let reply = guesser
            .request(json!({"type": "join", "code": guess(&real)}))
            .await;
        assert_eq!(outcome(&reply), "not_found", "guess {i}: {reply}");
        if i == 1 {
            // Two failures are not over a threshold of two.
            assert_eq!(value(&scrape(&server).await, ALARM), 0.0);
        }
    }
    wait_metric(&server, ALARM, "1", |v| v == 1.0).await;
}

// 10. Behind a proxy ----------------------------------------------------------------------

#[tokio::test]
async fn behind_a_trusted_proxy_guesses_count_per_forwarded_address() {
    let server = TestServer::with_config(config_with(
        "trusted_proxies = [\"127.0.0.1\"]\nfailed_joins_per_minute = 2",
    ))
    .await;
    let (_alice, real) = real_code(&server).await;
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];

    let mut guesser = customer_from(&server, None, &xff("203.0.113.9")).await;
    guess_until_limited(&mut guesser, &real).await;

    // The same forwarded address on another connection is limited...
    let mut again = customer_from(&server, None, &xff("203.0.113.9")).await;
    let reply = again
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    // ...another forwarded address is not, nor the proxy itself.
    let mut neighbour = customer_from(&server, None, &xff("203.0.113.10")).await;
    let reply = neighbour
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "not_found", "{reply}");
    let mut direct = customer_from(&server, None, &[]).await;
    let reply = direct
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "not_found", "{reply}");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = TestServer::with_config(config_with("failed_joins_per_minute = 2")).await;
    let (_alice, real) = real_code(&server).await;

    let mut guesser = customer_from(&server, None, &[("x-forwarded-for", "203.0.113.9")]).await;
    guess_until_limited(&mut guesser, &real).await;

    // A made-up address in the header does not escape the limit of
    // 127.0.0.1...
    let mut spoofer = customer_from(&server, None, &[("x-forwarded-for", "203.0.113.10")]).await;
    let reply = spoofer
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    // ...while a really different address is not limited.
    let mut other = customer_from(&server, Some(OTHER), &[]).await;
    let reply = other
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "not_found", "{reply}");
}
