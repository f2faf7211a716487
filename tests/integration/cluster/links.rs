//! Direct links between nodes (`[cluster] link`): once two nodes are
//! linked, what they send each other no longer goes through Redis; a
//! connection to a link that cannot prove the cluster's secret is refused
//! and runs nothing.

use hmac::{KeyInit, Mac};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::scrape;

use super::redis_log::lifecycles;
use super::*;

/// A Redis connection for the test's own questions.
async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Waits until `node` has `n` links open to other nodes.
async fn links_up(node: &TestServer, n: f64) {
    let what = format!("{n} links open");
    crate::util::wait_metric(node, "casebroker_cluster_links", &what, |v| v == n).await;
}

/// Calls Redis ran of `command` since its statistics were last reset.
async fn calls_of(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_nodes_send_each_other_nothing_through_redis() {
    let redis = RedisServer::start();
    let unlimited = crate::util::UNLIMITED;
    let a = linked_node_with(&redis, "a", unlimited).await;
    let b = linked_node_with(&redis, "b", unlimited).await;
    let mut dash = b.agent(crate::util::ALICE).await;
    subscribe(&mut dash).await;
    // Whatever goes between them before they are linked goes through Redis.
    assert!(lifecycles(&[&a, &b], 2, Duration::from_millis(500)).await > 0);
    links_up(&a, 1.0).await;
    links_up(&b, 1.0).await;

    let mut conn = redis_conn(&redis).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let forwarded = |m: &str| crate::util::value(m, "casebroker_cluster_forwarded_total");
    let notices = |m: &str| crate::util::value(m, "casebroker_cluster_log_notices_total");
    let (ma, mb) = (scrape(&a).await, scrape(&b).await);
    let before = forwarded(&ma) + forwarded(&mb);
    let notices_before = notices(&ma) + notices(&mb);
    // Each case's agent on one node and its customer on the other: half
    // the commands are forwarded, every commit is a notice to the other.
    let done = lifecycles(&[&a, &b], 4, Duration::from_secs(2)).await;
    assert!(done > 0, "no lifecycle finished");
    let (ma, mb) = (scrape(&a).await, scrape(&b).await);
    assert!(
        forwarded(&ma) + forwarded(&mb) > before,
        "no command was forwarded"
    );
    // The follower heard of the commits: on the link, since nothing was
    // published.
    assert!(
        notices(&ma) + notices(&mb) > notices_before,
        "no log notice reached the other node"
    );
    // The commits are stored (one script call each batch), nothing is
    // published: calls, answers and notices all went over the links.
    assert!(calls_of(&mut conn, "evalsha").await > 0);
    assert_eq!(
        calls_of(&mut conn, "publish").await,
        0,
        "published in Redis"
    );
    // The dashboard on b saw the last case, decided on the other node or
    // on its own.
    let last = dash
        .wait_for("a case closed", |m| {
            m["type"] == "event" && m["case"]["status"] == "closed"
        })
        .await;
    assert_eq!(last["type"], "event");
    for n in [&a, &b] {
        let m = scrape(n).await;
        assert_eq!(
            crate::util::value(&m, "casebroker_cluster_rebuilds_total"),
            0.0
        );
        assert_eq!(
            crate::util::value(&m, "casebroker_cluster_link_refusals_total"),
            0.0
        );
    }
}

/// The first message on a link, as a node writes it.
#[derive(Serialize)]
struct Hello {
    version: u32,
    from: u64,
    to: u64,
    nonce: [u8; 16],
}

#[derive(serde::Deserialize)]
struct Welcome {
    nonce: [u8; 16],
    proof: Vec<u8>,
}

/// A length-prefixed frame, as on a link. A link the node closed may
/// refuse it: what the node answers (or not) is read after.
async fn write_frame(s: &mut TcpStream, body: &[u8]) {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let _ = s.write_all(&frame).await;
}

/// The next frame, or `None` once the link is closed.
async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the node answers or closes within 10 s")
}

fn proof(secret: &[u8], side: &[u8], hello: &Hello, theirs: &[u8; 16]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(b"casebroker-link/1 ");
    mac.update(side);
    mac.update(&hello.from.to_be_bytes());
    mac.update(&hello.to.to_be_bytes());
    mac.update(&hello.nonce);
    mac.update(theirs);
    mac.finalize().into_bytes().to_vec()
}

/// Node `name`'s number and link address, as another node finds them.
async fn link_of(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> (u64, String) {
    let names: std::collections::HashMap<u64, String> = redis::cmd("HGETALL")
        .arg("casebroker:node-names")
        .query_async(conn)
        .await
        .unwrap();
    let number = *names.iter().find(|(_, n)| *n == name).unwrap().0;
    let addr: String = redis::cmd("HGET")
        .arg("casebroker:links")
        .arg(number)
        .query_async(conn)
        .await
        .unwrap();
    (number, addr)
}

/// Waits until `node` counts `n` refused links.
async fn refusals(node: &TestServer, n: f64) {
    let what = format!("{n} refused links");
    let series = "casebroker_cluster_link_refusals_total";
    crate::util::wait_metric(node, series, &what, |v| v == n).await;
}

/// A connection to the link at `addr` that said hello to node `to`, with
/// the hello and the node's welcome.
async fn greet(addr: &str, to: u64) -> (TcpStream, Hello, Welcome) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let h = Hello {
        version: 1,
        from: 999,
        to,
        nonce: rand::random(),
    };
    write_frame(&mut s, &postcard::to_allocvec(&h).unwrap()).await;
    let welcome = postcard::from_bytes(&read_frame(&mut s).await.expect("a welcome")).unwrap();
    (s, h, welcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_cannot_prove_the_secret_is_refused_and_runs_nothing() {
    let redis = RedisServer::start();
    let a = linked_node(&redis, "a").await;
    let mut conn = redis_conn(&redis).await;
    let (number, addr) = link_of(&mut conn, "a").await;
    let secret: String = redis::cmd("GET")
        .arg("casebroker:link-secret")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(secret.len(), 64, "a 32-byte secret, in hex");
    let hello = |to| Hello {
        version: 1,
        from: 999,
        to,
        nonce: rand::random(),
    };

    // Not a hello at all: closed, no answer.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    write_frame(&mut s, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(read_frame(&mut s).await, None);
    refusals(&a, 1.0).await;

    // A frame announced larger than a link takes: closed.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_eq!(read_frame(&mut s).await, None);
    refusals(&a, 2.0).await;

    // A hello for another node number: closed before a's proof.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    write_frame(&mut s, &postcard::to_allocvec(&hello(number + 1)).unwrap()).await;
    assert_eq!(read_frame(&mut s).await, None);
    refusals(&a, 3.0).await;

    // Another version: closed.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut other = hello(number);
    other.version = 2;
    write_frame(&mut s, &postcard::to_allocvec(&other).unwrap()).await;
    assert_eq!(read_frame(&mut s).await, None);
    refusals(&a, 4.0).await;

    // A hello for a: a proves it knows the secret; a wrong proof back
    // closes the link, and what follows it is not run.
    let (mut s, h, welcome) = greet(&addr, number).await;
    assert_eq!(
        welcome.proof,
        proof(secret.as_bytes(), b"listener", &h, &welcome.nonce),
        "a proves it knows the secret"
    );
    let wrong = proof(b"another secret", b"opener", &h, &welcome.nonce);
    write_frame(&mut s, &wrong).await;
    assert_eq!(read_frame(&mut s).await, None);
    refusals(&a, 5.0).await;

    // Silent after connecting: closed once the handshake's time is up.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(read_frame(&mut s).await, None);
    refusals(&a, 6.0).await;

    // The right proof is taken: the link stays open (nothing comes back
    // on it), and a is as before.
    let (mut s, h, welcome) = greet(&addr, number).await;
    write_frame(
        &mut s,
        &proof(secret.as_bytes(), b"opener", &h, &welcome.nonce),
    )
    .await;
    // A batch that does not decode is dropped, the link kept.
    write_frame(&mut s, b"\xff\xff\xff").await;
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_u8()).await;
    assert!(closed.is_err(), "the link was closed: {closed:?}");
    refusals(&a, 6.0).await;
    let mut agent = a.agent(crate::util::BOB).await;
    create(&mut agent, "After the strangers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_address_is_refused_without_a_cluster_or_when_taken() {
    use crate::util::process::{BROKER, Process};
    // --link (as --node-id) without a cluster: a flag error.
    for (flag, value) in [("--link", "127.0.0.1:0"), ("--node-id", "n")] {
        let broker = Process::start(
            BROKER,
            Some(&crate::util::config_text("")),
            &["--listen", "127.0.0.1:0", flag, value],
            &[],
        );
        let status = broker.exit(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(64), "{}", broker.output());
        assert!(
            broker
                .output()
                .contains(&format!("casebroker: {flag} needs a cluster")),
            "{}",
            broker.output()
        );
    }

    // A link address another process holds: the node does not start.
    let redis = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = crate::util::config_text(&cluster_table(&redis, "t", ""));
    let broker = Process::start(
        BROKER,
        Some(&config),
        &[
            "--listen",
            "127.0.0.1:0",
            "--link",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    let status = broker.exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "{}", broker.output());
    assert!(
        broker.output().contains(&format!(
            "cannot listen for other nodes' links on 127.0.0.1:{port} (cluster.link)"
        )),
        "{}",
        broker.output()
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_their_handshake_are_bounded() {
    let redis = RedisServer::start();
    let a = linked_node(&redis, "a").await;
    let mut conn = redis_conn(&redis).await;
    let (number, addr) = link_of(&mut conn, "a").await;
    // 64 connections that say nothing hold every handshake place (each
    // for the handshake's 2 s): the next one, a proper hello, is closed
    // without a welcome. Tried again if the machine was too slow to open
    // them all within the 2 s.
    let mut refused = 0.0;
    for attempt in 0..3 {
        let mut silent = Vec::new();
        for _ in 0..64 {
            silent.push(TcpStream::connect(&addr).await.unwrap());
        }
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let h = Hello {
            version: 1,
            from: 999,
            to: number,
            nonce: rand::random(),
        };
        write_frame(&mut s, &postcard::to_allocvec(&h).unwrap()).await;
        let answer = read_frame(&mut s).await;
        // Still in their handshake: the first silent one is open.
        let first_open = tokio::time::timeout(Duration::from_millis(1), silent[0].read_u8())
            .await
            .is_err();
        // Each of the 65 ends refused: closed unproven, or past the bound.
        refused += 65.0;
        drop((silent, s));
        refusals(&a, refused).await;
        if first_open {
            assert_eq!(answer, None, "a welcome past the bound");
            let mut agent = a.agent(crate::util::BOB).await;
            create(&mut agent, "After the crowd").await;
            return;
        }
        eprintln!("attempt {attempt}: the first connection's handshake ran out first");
    }
    panic!("64 connections could not be opened within the handshake's 2 s, three times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_links_is_logged_once_and_counted_in_full() {
    use crate::util::process::{BROKER, Process};
    let redis = RedisServer::start();
    let config = crate::util::config_text(&cluster_table(&redis, "p", ""));
    let broker = Process::start(
        BROKER,
        Some(&config),
        &["--listen", "127.0.0.1:0", "--link", "127.0.0.1:0"],
        &[],
    );
    let at = crate::util::Endpoint::new(broker.listening().await);
    let mut conn = redis_conn(&redis).await;
    let (_, addr) = link_of(&mut conn, "p").await;
    for _ in 0..20 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        write_frame(&mut s, b"not a hello").await;
        assert_eq!(read_frame(&mut s).await, None);
    }
    crate::util::wait_metric(
        &at,
        "casebroker_cluster_link_refusals_total",
        "20 refusals",
        |v| v == 20.0,
    )
    .await;
    let out = broker.output();
    assert_eq!(
        out.matches("a link to this node was refused").count(),
        1,
        "{out}"
    );
    assert!(out.contains("refused_so_far=1"), "{out}");
}
