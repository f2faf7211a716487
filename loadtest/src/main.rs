//! The `casebroker-loadtest` binary: parses the command line, builds the
//! runtime and runs [`casebroker_loadtest::run_cli`]. Exit codes: 0 when the
//! run was clean, 1 when it saw losses or failures or could not run, 2 for
//! a bad flag or a URL outside loopback.

use std::process::ExitCode;

use casebroker_loadtest::{Cli, NotLoopback, run_cli};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(usize::from(n));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("casebroker-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_cli(cli)) {
        Ok(Some(report)) if report.failed => {
            eprintln!("casebroker-loadtest: the run saw losses or failures (see the table)");
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<NotLoopback>().is_some() => {
            eprintln!("casebroker-loadtest: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("casebroker-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
