//! casebroker-testkit: what the integration tests (`tests/`) and the load
//! tester (`loadtest/`) share, so that each job has one definition.
//!
//! # Layout
//! - [`process`]: the broker binary as a child process ([`Process`]) and
//!   [`TempDir`], a directory removed when dropped.
//! - [`server`]: the broker run in this process on a free loopback port
//!   ([`InProcess`]).
//! - [`crash`]: what clients asked of a broker that was then killed, and
//!   the verdict on what the restarted broker shows ([`crash::judge`]).
//! - [`http`]: reading a raw HTTP/1.1 answer ([`http::dechunk`]).
//! - [`metrics`]: one series' value in the broker's `/metrics` text.

pub mod crash;
pub mod http;
pub mod metrics;
pub mod process;
pub mod server;

pub use process::{Process, TempDir};
pub use server::InProcess;

use std::time::Duration;

/// How long any wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(5);
