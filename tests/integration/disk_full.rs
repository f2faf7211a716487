//! A disk that fills while the broker runs: once the room the data file
//! already holds is used up, changes are refused with `unavailable` (never
//! acknowledged falsely: every acknowledged one survives a restart),
//! `/healthz` says so, and the
//! broker takes changes again by itself once there is room. The data
//! directory lives on a small filesystem of the test's own (tmpfs), which
//! needs root, as CI has.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!(
            "casebroker-disk-full-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fills the filesystem of `dir` until it has no room left.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let one = [0u8; 1];
    while f.write_all(&one).is_ok() {}
    let _ = f.flush();
    path
}

/// One HTTP request with a client timeout longer than a stalled commit.
async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client
        .request(method, server.url(path))
        .timeout(Duration::from_secs(30))
        .bearer_auth(ALICE);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `check` until it holds, for at most `limit`.
async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_changes_and_recovers_by_itself() {
    let disk = SmallDisk::mount(16);
    let data = disk.dir.join("data");
    let server = TestServer::with_config(config_with(&format!("data_dir = {:?}", data))).await;
    let case = json!({"group": "support", "name": "before"});
    let (status, before) = request(&server, "POST", "/v1/cases", Some(case.clone())).await;
    assert_eq!(status, 201, "{before}");

    let filler = fill(&disk.dir);
    // Changes are refused once what the data file has already allocated
    // is used up; any acknowledged before that were stored there and must
    // survive (checked after the restart below).
    let mut refused = None;
    let mut stored = vec![before.clone()];
    until(
        "a change refused with unavailable",
        Duration::from_secs(60),
        async || {
            let (status, body) = request(&server, "POST", "/v1/cases", Some(case.clone())).await;
            match status {
                201 => {
                    stored.push(body);
                    false
                }
                503 => {
                    refused = Some(body);
                    true
                }
                other => panic!("a create on a full disk answered {other}: {body}"),
            }
        },
    )
    .await;
    assert_eq!(refused.unwrap()["code"], "unavailable");
    let (status, _) = request(&server, "GET", "/healthz", None).await;
    assert_eq!(status, 503, "/healthz tells the journal cannot write");
    // Reading goes on.
    let code = before["code"].as_str().unwrap();
    let (status, _) = request(&server, "GET", &format!("/v1/cases/{code}"), None).await;
    assert_eq!(status, 200);

    // Room again: the broker takes changes again by itself.
    std::fs::remove_file(&filler).unwrap();
    until(
        "/healthz healthy again",
        Duration::from_secs(60),
        async || request(&server, "GET", "/healthz", None).await.0 == 200,
    )
    .await;
    let (status, after) = request(
        &server,
        "POST",
        "/v1/cases",
        Some(json!({"group": "support", "name": "after"})),
    )
    .await;
    assert_eq!(status, 201, "{after}");

    // And what was acknowledged survives a restart.
    server.stop().await;
    let server = TestServer::with_config(config_with(&format!("data_dir = {:?}", data))).await;
    stored.push(after);
    for c in &stored {
        let code = c["code"].as_str().unwrap();
        let (status, got) = request(&server, "GET", &format!("/v1/cases/{code}"), None).await;
        assert_eq!(status, 200, "{code} lost: {got}");
        assert_eq!(got["name"], c["name"]);
    }
    server.stop().await;
}
