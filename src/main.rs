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
    /// Where this node listens for direct links from the other nodes of its
    /// cluster (the config's `[cluster] link`), e.g. 10.0.0.5:7400.
    #[arg(long, value_name = "ADDR")]
    link: Option<SocketAddr>,
    /// Threads that run the broker's work, overriding the config's
    /// `workers` (default: one per core it may use).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
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
    if let Some(n) = args.workers {
        config.workers = Some(n);
    }
    if let Some(url) = args.redis_url {
        let cluster = config
            .cluster
            .get_or_insert_with(|| casebroker::config::ClusterConfig::new(url.clone()));
        cluster.redis_url = url;
    }
    // Flags that set a field of the `[cluster]` table need one.
    let cluster_flags = [
        ("--node-id", args.node_id.is_some()),
        ("--link", args.link.is_some()),
    ];
    match &mut config.cluster {
        Some(c) => {
            if let Some(id) = args.node_id {
                c.node_id = Some(id);
            }
            if let Some(addr) = args.link {
                c.link = Some(addr);
            }
        }
        None => {
            if let Some((flag, _)) = cluster_flags.iter().find(|(_, given)| *given) {
                eprintln!(
                    "casebroker: {flag} needs a cluster (--redis-url or [cluster] in the config)"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    if let Err(e) = config.validate() {
        eprintln!("casebroker: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if config.companies.is_empty() {
        eprintln!(
            "casebroker: the config has no [[companies]]: nobody could sign in or ask for help; \
             add a company (see README.md), or run without --config for the demo"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    // The data directory is opened (and locked) and checked against the
    // config before anything binds: a broker that cannot keep its promises
    // does not start, and one whose config contradicts its data says so as
    // a config error.
    let store = if config.cluster.is_some() {
        None
    } else {
        match casebroker::store::open(&config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("casebroker: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if let Some(s) = &store
        && let Err(e) = s.reconcile(&mut config)
    {
        eprintln!("casebroker: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = config.workers {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("casebroker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, store, demo)) {
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

async fn serve(
    mut config: Config,
    store: Option<casebroker::store::Store>,
    demo: bool,
) -> anyhow::Result<()> {
    ignore_sighup();
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
    if let Some(c) = &config.cluster {
        tracing::info!(redis_url = %casebroker::config::redacted_url(&c.redis_url), "a cluster node: cases live in Redis");
    }
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
    } else {
        print_links(addr, &config);
    }
    casebroker::run_with_store(listener, metrics_listener, config, store, shutdown_signal())
        .await?;
    tracing::info!("casebroker stopped");
    Ok(())
}

/// Libraries whose debug and trace lines carry what passes through them
/// (whole WebSocket messages, HTTP headers, Redis commands): tokens, chat
/// and signal payloads. They are never logged below `info`, whatever
/// `RUST_LOG` says.
const QUIET_BELOW_INFO: [&str; 5] = [
    "tungstenite=info",
    "tokio_tungstenite=info",
    "hyper=info",
    "hyper_util=info",
    "redis=info",
];

fn init_tracing(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for directive in QUIET_BELOW_INFO {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    // Colour only on a terminal: a file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGHUP does not stop the broker: the config is read at start only, so
/// it is logged and otherwise ignored. Installed before anything binds,
/// so that no SIGHUP finds the default action (terminate) in place.
fn ignore_sighup() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!(
                        "SIGHUP received and ignored: the config is read at start only; restart the broker to apply a changed config"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch for SIGHUP"),
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

/// The address a browser on this machine opens: the unspecified address
/// cannot be opened, the loopback one on the same port reaches the broker
/// too.
fn browsable(listening: SocketAddr) -> SocketAddr {
    let mut addr = listening;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// The pages of every company of a config: the dashboard and the help
/// page of each module (tokens are never printed).
fn print_links(listening: SocketAddr, config: &Config) {
    let addr = browsable(listening);
    let mut text = format!(
        "\ncasebroker is running.\n\n  agent dashboard  http://{addr}/  (sign in with an agent's token)\n"
    );
    for c in &config.companies {
        let name = if c.name.is_empty() { &c.id } else { &c.name };
        text.push_str(&format!("\n  company {} ({name})\n", c.id));
        if c.modules.is_empty() {
            text.push_str("    no module keys: customers get codes from agents\n");
        }
        for m in &c.modules {
            text.push_str(&format!(
                "    help page  http://{addr}/help/{}  (module {}, group {})\n",
                m.key, m.key, m.group
            ));
        }
    }
    println!("{text}");
}

fn print_demo(listening: SocketAddr) {
    let addr = browsable(listening);
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
  curl -s -X POST http://{addr}/v1/help -H 'content-type: application/json' -d '{{"module":"{DEMO_MODULE_KEY}","name":"Ana"}}'
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
