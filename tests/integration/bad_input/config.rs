//! Bad config files: the binary refuses each with exit code 64 and a
//! message on stderr, before it serves.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// Writes `text` to a fresh file in the temp directory.
fn temp_config(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "casebroker-bad-input-{}-{}-{}.toml",
        std::process::id(),
        NEXT_FILE.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `--config path` and returns its exit code and
/// stderr. Fails (and kills it) if it is still running after 10 s: a bad
/// config must stop it before it serves.
fn run_binary(path: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_casebroker"))
        .arg("--config")
        .arg(path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("casebroker did not exit on a bad config {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

#[test]
fn binary_refuses_a_bad_config_with_exit_64() {
    let cases = [
        (
            r#"
[[companies]]
id = "acme"
groups = [{ id = "support" }]

[[companies.agents]]
id = "alice"
token = "long-enough-token"
groups = ["nope"]
"#,
            "companies[0].agents[0].groups",
        ),
        ("case_ttl = \"soon\"\n", "case_ttl"),
        ("bogus = 1\n", "bogus"),
        (
            "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nlink = \"0.0.0.0:7400\"\n",
            "cluster.link",
        ),
        ("workers = 0\n", "workers"),
        ("workers = 5000\n", "workers"),
    ];
    for (text, field) in cases {
        let path = temp_config(text);
        let (code, stderr) = run_binary(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(code, Some(64), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field} not named in: {stderr}");
    }

    let missing = std::env::temp_dir().join(format!(
        "casebroker-bad-input-missing-{}.toml",
        std::process::id()
    ));
    assert!(!missing.exists());
    let (code, stderr) = run_binary(&missing);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(!stderr.is_empty());
}
