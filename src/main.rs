//! The `casebroker` binary: flags, config, tracing, bind, run. Exit codes:
//! 0 after a clean shutdown, 64 for a bad config or flag, 1 otherwise.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use casebroker::Config;
use casebroker::config::{DEMO_ADMIN_TOKEN, DEMO_AGENT_TOKEN, DEMO_MODULE_KEY};
use clap::Parser;

/// A real-time WebSocket session broker for support teams.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see README.md). Without it, a built-in demo company.
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    /// Listen address, overriding the config's `listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory (the journal), overriding the config's `data_dir`.
    #[arg(long, value_name = "DIR", conflicts_with = "in_memory")]
    data_dir: Option<std::path::PathBuf>,
    /// Keep nothing on disk: every case is gone when the broker stops.
    #[arg(long)]
    in_memory: bool,
    /// Run as a node of a cluster on this Redis (the config's
    /// `[cluster] redis_url`), e.g. redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data_dir", "in_memory"])]
    redis_url: Option<String>,
    /// This node's name in a cluster (the config's `[cluster] node_id`).
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// EX_USAGE from sysexits.h: the config or a flag is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(args.log_format);
    let demo = args.config.is_none();
    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("casebroker: invalid config {path}: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Config::demo(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
        config.in_memory = false;
    }
    if args.in_memory {
        config.in_memory = true;
    }
    if let Some(url) = args.redis_url {
        let cluster = config
            .cluster
            .get_or_insert_with(|| casebroker::config::ClusterConfig::new(url.clone()));
        cluster.redis_url = url;
    }
    if let Some(id) = args.node_id {
        match &mut config.cluster {
            Some(c) => c.node_id = Some(id),
            None => {
                eprintln!(
                    "casebroker: --node-id needs a cluster (--redis-url or [cluster] in the config)"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    if let Err(e) = config.validate() {
        eprintln!("casebroker: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("casebroker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("casebroker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Files kept free for everything that is not a client connection (the
/// listeners, logs, /proc reads).
const RESERVED_FILES: u64 = 64;

async fn serve(mut config: Config, demo: bool) -> anyhow::Result<()> {
    // Raise the soft open-file limit to the hard one; every connection is a
    // file, so that limit decides the capacity. Beyond it the broker answers
    // 503 rather than failing to accept.
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    // The data directory is opened (and locked) before anything binds: a
    // broker that cannot keep its promises does not start.
    let store = match &config.cluster {
        Some(c) => {
            tracing::info!(redis_url = %c.redis_url, "a cluster node: cases live in Redis");
            None
        }
        None => casebroker::store::open(&config)?,
    };
    match &store {
        Some(s) => tracing::info!(data_dir = %s.path().display(), "keeping data"),
        None if config.cluster.is_some() => {}
        None => {
            tracing::warn!("in_memory: nothing is kept; every case is gone when the broker stops")
        }
    }
    let derived = files.saturating_sub(RESERVED_FILES).max(1) as usize;
    let capacity = *config.max_connections.get_or_insert(derived);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics_listen)"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, open_files = files, capacity, "casebroker listening");
    if let Some(l) = &metrics_listener {
        tracing::info!(addr = %l.local_addr()?, "metrics listening");
    }
    if demo {
        print_demo(addr);
    }
    casebroker::run_with_store(listener, metrics_listener, config, store, shutdown_signal())
        .await?;
    tracing::info!("casebroker stopped");
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

fn print_demo(listening: SocketAddr) {
    // A browser cannot open the unspecified address; the loopback one on
    // the same port reaches the broker too.
    let mut addr = listening;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    println!(
        r#"
casebroker is running on the built-in demo config (pass --config FILE for yours).

  company  demo   groups: support, sales
  agents   alice  (admin)  token: {DEMO_ADMIN_TOKEN}
           bob             token: {DEMO_AGENT_TOKEN}
  module   {DEMO_MODULE_KEY}  (group support)

In a browser:
  agent dashboard  http://{addr}/
                   sign in with the token {DEMO_ADMIN_TOKEN} (alice) or {DEMO_AGENT_TOKEN} (bob)
  customer page    http://{addr}/help/{DEMO_MODULE_KEY}
                   open it in another window, ask for help, take the case on the dashboard

Or from a terminal:
  # a customer asks for help (HTTP), and gets a session code
  curl -s -X POST http://{addr}/v1/help -d '{{"module":"{DEMO_MODULE_KEY}","name":"Ana"}}'
  # the queue, as alice sees it
  curl -s -H 'Authorization: Bearer {DEMO_ADMIN_TOKEN}' http://{addr}/v1/cases
  # a live session over WebSocket (websocat): one terminal per side
  websocat ws://{addr}/v1/ws
    {{"type":"hello","role":"customer"}}
    {{"type":"join","code":"<code>"}}
  websocat ws://{addr}/v1/ws
    {{"type":"hello","role":"agent","token":"{DEMO_AGENT_TOKEN}"}}
    {{"type":"join","code":"<code>"}}
    {{"type":"chat","code":"<code>","text":"Hello, how can I help?"}}
"#
    );
}
