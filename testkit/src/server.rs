//! The broker run in this process: [`InProcess`] serves a config on a free
//! loopback port until it is stopped or dropped.

use std::net::SocketAddr;
use std::time::Duration;

use casebroker::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a clean stop may take (the broker's grace and a margin).
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// A broker serving `config` on a free loopback port, told to stop when
/// dropped.
pub struct InProcess {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    /// Binds `127.0.0.1:0` and runs the broker on it.
    pub async fn start(config: Config) -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(casebroker::run(listener, config, async {
            let _ = stopped.await;
        }));
        InProcess {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Shuts the broker down and waits until it has stopped (a data
    /// directory is then closed and may be opened again): within its grace
    /// period, without a panic, and with `run` answering `Ok`.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STOP_LIMIT, task)
                .await
                .expect("broker stops within its grace period")
                .expect("the broker's task did not panic")
                .expect("the broker stopped without an error");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
