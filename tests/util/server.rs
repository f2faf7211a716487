//! The broker under test: [`TestServer`] on a free loopback port in each
//! storage mode ([`Mode`]), reached through its [`Endpoint`], and its clean
//! stop.

use std::ops::Deref;

use casebroker::Config;
use casebroker_testkit::{InProcess, TempDir};

use super::endpoint::Endpoint;
use super::{config_text, config_with, redis};

/// A broker serving in this process on a free loopback port, shut down
/// when dropped. It derefs to its [`Endpoint`]: a test reaches it as it
/// reaches a broker process (`server.agent(..)`, `server.http(..)`).
pub struct TestServer {
    broker: InProcess,
    endpoint: Endpoint,
    /// What the broker stores into (a data directory, a Redis), kept as
    /// long as the broker.
    storage: Option<Storage>,
}

impl Deref for TestServer {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Where a test broker keeps its cases: every storage mode a user can
/// pick, so that each protocol test runs in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `in_memory = true`.
    Memory,
    /// The default: a journal in a data directory.
    Journal,
    /// One node of a cluster on its own `redis-server`.
    Cluster,
}

enum Storage {
    Dir(TempDir),
    Redis(redis::RedisServer),
}

impl TestServer {
    /// A broker on the default test config.
    pub async fn start() -> TestServer {
        TestServer::with_config(config_with("")).await
    }

    /// A broker on the default test config in storage `mode`.
    pub async fn start_in(mode: Mode) -> TestServer {
        TestServer::with_extra_in(mode, "").await
    }

    /// A broker on the test config with `extra` (top-level keys) in
    /// storage `mode`.
    pub async fn with_extra_in(mode: Mode, extra: &str) -> TestServer {
        TestServer::with_text_in(mode, extra, |text| text).await
    }

    /// As [`TestServer::with_extra_in`], the config's text passed through
    /// `edit` first (to change a company's tables).
    pub async fn with_text_in(mode: Mode, extra: &str, edit: fn(String) -> String) -> TestServer {
        let config = |extra: &str| {
            Config::from_toml(&edit(config_text(extra))).expect("test config is valid")
        };
        match mode {
            Mode::Memory => TestServer::with_config(config(extra)).await,
            Mode::Journal => {
                let dir = TempDir::new("data");
                let extra = format!("data_dir = \"{}\"\n{extra}", dir.path().display());
                let mut server = TestServer::with_config(config(&extra)).await;
                server.storage = Some(Storage::Dir(dir));
                server
            }
            Mode::Cluster => {
                let redis = redis::RedisServer::start();
                let extra = format!(
                    "{extra}\n[cluster]\nredis_url = \"{}\"\nnode_id = \"n\"\nnode_timeout = \"3s\"\n",
                    redis.url()
                );
                let mut server = TestServer::with_config(config(&extra)).await;
                server.storage = Some(Storage::Redis(redis));
                server
            }
        }
    }

    /// Node `name` of a cluster on `redis`, the test config with `extra`
    /// (top-level keys) and an image every second, linked directly to the
    /// other nodes.
    pub async fn node(redis: &redis::RedisServer, name: &str, extra: &str) -> TestServer {
        TestServer::node_with(redis, name, extra, |text| text).await
    }

    /// As [`TestServer::node`], the config's text passed through `edit`
    /// first (to change a company's tables).
    pub async fn node_with(
        redis: &redis::RedisServer,
        name: &str,
        extra: &str,
        edit: fn(String) -> String,
    ) -> TestServer {
        let table = format!(
            "{extra}\nsnapshot_interval = \"1s\"\n[cluster]\nredis_url = \"{}\"\nnode_id = \"{name}\"\nnode_timeout = \"3s\"\nlink = \"127.0.0.1:0\"\n",
            redis.url()
        );
        let config = Config::from_toml(&edit(config_text(&table))).expect("test config is valid");
        TestServer::with_config(config).await
    }

    pub async fn with_config(config: Config) -> TestServer {
        let broker = InProcess::start(config).await;
        TestServer {
            endpoint: Endpoint::new(broker.addr),
            broker,
            storage: None,
        }
    }

    /// Stops the broker and waits for `run` to return.
    pub async fn shutdown(self) {
        self.stop().await
    }

    /// Shuts the broker down and waits until it has stopped (its data
    /// directory is closed and may be opened again): within its grace
    /// period, without a panic, and with `run` answering `Ok`.
    pub async fn stop(self) {
        self.broker.stop().await
    }
}
