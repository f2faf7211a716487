//! casebroker-loadtest: drives a casebroker (or a baseline server) on
//! loopback with bounded scenarios and reports throughput, latency,
//! correctness and memory.
//!
//! # Layout
//! - [`cli`]: flags, caps, and [`cli::run_cli`], which runs one scenario and
//!   writes its table, JSON and plot.
//! - [`target`]: the loopback-only URL check and source-address rotation.
//! - [`client`]: a typed client over the main crate's wire types.
//! - [`scan`]: the byte scanners of the hot receive paths.
//! - [`fanout`], [`lifecycle`], [`idle`], [`mixed`], [`queue_depth`]: the
//!   scenarios against a running broker; [`crash`] starts the broker itself
//!   on a data directory, kills it and checks what it kept.
//! - [`webhooks`]: the webhook scenario, with its HTTP receiver
//!   ([`receiver`]); [`http`]: the small HTTP/1.1 client of the admin calls.
//! - [`bare`]: a bare tokio-tungstenite broadcast server, the ceiling
//!   `fanout --baseline bare` compares with; [`baseline`] starts it (or the
//!   Node.js baseline) as a child process for one run.
//! - [`stats`], [`report`], [`plot`]: histograms, table and JSON, SVG.

pub mod bare;
pub mod baseline;
pub mod cli;
pub mod client;
pub mod crash;
pub mod fanout;
pub mod http;
pub mod idle;
pub mod lifecycle;
pub mod mixed;
pub mod plot;
pub mod queue_depth;
pub mod receiver;
pub mod report;
pub mod scan;
pub mod stats;
pub mod target;
pub mod webhooks;

pub use cli::{Cli, run_cli};
pub use target::NotLoopback;
