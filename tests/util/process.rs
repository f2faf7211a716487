//! The broker binary of this build as its own process: [`Process`] (from
//! casebroker-testkit, which the load tester's `crash` scenario starts its
//! broker with too) and [`BROKER`], the binary's path.

#[allow(unused_imports)]
pub use casebroker_testkit::Process;

/// The casebroker binary of this build.
pub const BROKER: &str = env!("CARGO_BIN_EXE_casebroker");
