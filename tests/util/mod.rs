//! Test helpers: a real broker on `127.0.0.1:0`, a typed WebSocket client
//! that waits for what it expects with a timeout, and an HTTP helper.
//!
//! - here: the test config (two companies), its tokens and module keys, and
//!   `in_every_mode!`;
//! - `server`: [`TestServer`] in each storage mode;
//! - `endpoint`: [`Endpoint`], a broker at its address (in this process or
//!   a process): its WebSocket and its HTTP API;
//! - `ws`: [`WsClient`], [`Closed`];
//! - `cases`: creating, reading and following cases;
//! - `metrics`: reading `/metrics`;
//! - [`process`]: the broker binary as a process (SIGKILL, SIGHUP), and
//!   [`TempDir`], a directory removed when dropped;
//! - [`receiver`]: a webhook receiver; [`redis`]: a `redis-server`.
#![allow(dead_code)]

pub mod process;
pub mod receiver;
pub mod redis;

mod cases;
mod endpoint;
mod metrics;
mod server;
mod ws;

// Each test crate uses its share of these.
#[allow(unused_imports)]
pub use cases::*;
#[allow(unused_imports)]
pub use endpoint::*;
#[allow(unused_imports)]
pub use metrics::*;
pub use server::*;
#[allow(unused_imports)]
pub use ws::*;

use casebroker::Config;
#[allow(unused_imports)]
pub use casebroker_testkit::{TempDir, WAIT};

pub const ALICE: &str = "alice-token-0001"; // acme admin, groups support + sales
pub const BOB: &str = "bob-token-00002"; // acme, support
pub const CAROL: &str = "carol-token-0003"; // acme, sales
pub const DAVE: &str = "dave-token-00004"; // acme, support
pub const GINA: &str = "gina-token-00005"; // globex admin, support
pub const MODULE: &str = "acme-qs"; // acme / support
pub const MODULE_BOB: &str = "acme-qs-bob"; // acme / support, default assignee bob
pub const MODULE_SALES: &str = "acme-qs-sales"; // acme / sales
pub const GLOBEX_MODULE: &str = "globex-qs"; // globex / support

/// Top-level config lines that lift the per-connection message rate, for
/// tests that drive load through one connection.
pub const UNLIMITED: &str = "messages_per_second = 1000000\nmessage_burst = 1000000";

/// The test config: two companies, so isolation can be checked. `extra` is
/// prepended (top-level keys such as `case_ttl = "1s"`).
pub fn config_with(extra: &str) -> Config {
    Config::from_toml(&config_text(extra)).expect("test config is valid")
}

/// The test config as TOML, for a broker started as a process.
pub fn config_text(extra: &str) -> String {
    // Nothing on disk unless the test names a data directory.
    let storage = if extra.contains("data_dir") {
        ""
    } else {
        "in_memory = true"
    };
    let text = format!(
        r#"
{storage}
{extra}

[[companies]]
id = "acme"
name = "ACME"
groups = [{{ id = "support" }}, {{ id = "sales" }}]

[[companies.agents]]
id = "alice"
name = "Alice"
token = "{ALICE}"
groups = ["support", "sales"]
admin = true

[[companies.agents]]
id = "bob"
name = "Bob"
token = "{BOB}"
groups = ["support"]

[[companies.agents]]
id = "carol"
name = "Carol"
token = "{CAROL}"
groups = ["sales"]

[[companies.agents]]
id = "dave"
name = "Dave"
token = "{DAVE}"
groups = ["support"]

[[companies.modules]]
key = "{MODULE}"
group = "support"

[[companies.modules]]
key = "{MODULE_BOB}"
group = "support"
default_assignee = "bob"

[[companies.modules]]
key = "{MODULE_SALES}"
group = "sales"

[[companies]]
id = "globex"
name = "Globex"
groups = [{{ id = "support" }}]

[[companies.agents]]
id = "gina"
name = "Gina"
token = "{GINA}"
groups = ["support"]
admin = true

[[companies.modules]]
key = "{GLOBEX_MODULE}"
group = "support"
"#
    );
    text
}

/// Generates, for each named `async fn NAME(mode: Mode)`, a module `NAME`
/// with one test per storage mode: `in_memory`, `journaled`,
/// `cluster_node`.
#[allow(unused_macros)]
macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::util::Mode;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_memory() {
                super::$name(Mode::Memory).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn journaled() {
                super::$name(Mode::Journal).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster_node() {
                super::$name(Mode::Cluster).await
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use in_every_mode;
