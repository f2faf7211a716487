//! The agent dashboard, its admin page and the customer help page in a real
//! browser: a broker on 127.0.0.1:0 for each script, `tests/browser/e2e.mjs`
//! (the queue, cases, chat, the help page), `tests/browser/admin.mjs`
//! (the admin page) and `tests/browser/supervise.mjs` (offers), driving Debian's Chromium through Playwright against
//! it, end to end. The screenshots they take land in `target/screenshots/`,
//! or in the folder `SCREENSHOTS` names (`SCREENSHOTS=docs` refreshes the
//! README's); they are removed first, so the ones checked are this run's.
//! Without Chromium or the test's node_modules the test fails and says how
//! to install them (`.ci/run` does).

mod util;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::util::*;

/// The screenshots the run takes: the dashboard at 1280 px and at 400 px and
/// the help page at 360 px, the admin page at 1280 px, an offer on the
/// dashboard and the help page outside opening hours (all shown in the
/// README).
const SHOTS: [&str; 7] = [
    "dashboard.png",
    "help.png",
    "dashboard-narrow.png",
    "admin.png",
    "offer.png",
    "help-closed.png",
    "screen.png",
];

/// Each browser script, Chromium start included, stays under this.
const BROWSER_RUN: Duration = Duration::from_secs(240);

const INSTALL: &str = "install them with `apt-get install -y chromium nodejs npm` and \
                       `npm ci` in tests/browser (.ci/run does both)";

/// Node, Chromium and playwright-core, or a message saying what is missing.
fn prerequisites(root: &Path, chromium: &str) -> Result<(), String> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Err(format!("node is not installed; {INSTALL}"));
    }
    if !Path::new(chromium).exists() {
        return Err(format!("{chromium} is missing; {INSTALL}"));
    }
    let playwright = root.join("tests/browser/node_modules/playwright-core/package.json");
    if !playwright.exists() {
        return Err(format!(
            "{} is missing; {INSTALL}",
            playwright.parent().unwrap().display()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_admin_page_and_help_page_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Err(missing) = prerequisites(root, &chromium) {
        panic!("the browser test cannot run: {missing}");
    }
    let docs = match std::env::var("SCREENSHOTS") {
        Ok(dir) => root.join(dir),
        Err(_) => root.join("target/screenshots"),
    };
    std::fs::create_dir_all(&docs).expect("create the screenshot folder");
    for shot in SHOTS {
        match std::fs::remove_file(docs.join(shot)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove the old {shot}: {e}"),
        }
    }
    let started = std::time::SystemTime::now();

    let server = TestServer::start().await;
    let url = format!("http://{}", server.addr);
    run_script(
        root,
        "e2e.mjs",
        &chromium,
        &docs,
        &[
            "--url",
            &url,
            "--admin-token",
            ALICE,
            "--admin-name",
            "Alice",
            "--agent-token",
            BOB,
            "--agent-name",
            "Bob",
            "--module",
            MODULE,
            "--company-name",
            "ACME",
            "--assigned-module",
            MODULE_BOB,
            "--offline-agent",
            "dave",
            "--offline-agent-name",
            "Dave",
        ],
    )
    .await;
    server.shutdown().await;

    // The admin page changes the directory: a broker of its own.
    let server = TestServer::start().await;
    let url = format!("http://{}", server.addr);
    run_script(
        root,
        "admin.mjs",
        &chromium,
        &docs,
        &[
            "--url",
            &url,
            "--admin-token",
            ALICE,
            "--admin-name",
            "Alice",
            "--agent-token",
            BOB,
            "--agent-name",
            "Bob",
            "--agent-id",
            "bob",
            "--module",
            MODULE,
            "--company-name",
            "ACME",
        ],
    )
    .await;
    server.shutdown().await;

    // Offers and opening hours: a company that offers its cases.
    let server = TestServer::with_text_in(Mode::Memory, "", supervised).await;
    let url = format!("http://{}", server.addr);
    run_script(
        root,
        "supervise.mjs",
        &chromium,
        &docs,
        &[
            "--url",
            &url,
            "--agent-token",
            BOB,
            "--agent-name",
            "Bob",
            "--module",
            MODULE,
            "--closed-module",
            MODULE_SALES,
        ],
    )
    .await;
    server.shutdown().await;

    for shot in SHOTS {
        let meta = std::fs::metadata(docs.join(shot))
            .unwrap_or_else(|e| panic!("{shot} was not written by this run: {e}"));
        assert!(meta.len() > 10_000, "{shot} looks empty");
        let written = meta.modified().expect("file times");
        assert!(
            written >= started,
            "{shot} is older than this run ({written:?} < {started:?})"
        );
    }
}

/// The test config with automation by load that offers support's cases.
fn supervised(text: String) -> String {
    text.replacen(
        "name = \"ACME\"\n",
        "name = \"ACME\"\nassignment = \"least_loaded\"\n",
        1,
    )
    .replacen(
        r#"{ id = "support" }"#,
        r#"{ id = "support", offer_timeout = "30s" }"#,
        1,
    )
    .replacen(r#"{ id = "sales" }"#, &closed_until_tomorrow("sales"), 1)
}

/// A group open tomorrow (UTC) only, with its message.
fn closed_until_tomorrow(group: &str) -> String {
    use chrono::Datelike;
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [chrono::Utc::now().weekday().succ().num_days_from_monday() as usize];
    format!(
        r#"{{ id = "{group}", closed_message = "Sales is closed today.", hours = {{ tz = "UTC", {day} = "00:00-24:00" }} }}"#
    )
}

/// Runs `tests/browser/{script}` with `args` and the common ones, and fails
/// with its output unless it passes.
async fn run_script(root: &Path, script: &str, chromium: &str, docs: &Path, args: &[&str]) {
    let run = Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .args(args)
        .arg("--screenshots")
        .arg(docs)
        .args(["--chromium", chromium])
        .current_dir(root.join("tests/browser"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BROWSER_RUN, run)
        .await
        .unwrap_or_else(|_| panic!("{script} took longer than {BROWSER_RUN:?}"))
        .expect("start node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
}
