//! The broker's resident memory and metrics: [`RssSource`], where the
//! resident memory is read (`/proc/<pid>/status`, the pid given or found
//! by the listening port, or the broker's `/metrics`), and the plain
//! HTTP/1.1 `GET /metrics` (its answer read by `casebroker_testkit`) with
//! the reading of a metric's value from Prometheus text.

use std::time::Duration;

use anyhow::{Context, bail};
use casebroker_testkit::http::read_answer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::target::Target;

/// Where the broker's resident memory comes from.
#[derive(Clone, Debug)]
pub enum RssSource {
    /// `/proc/<pid>/status`, from `--broker-pid` or found by the port.
    Pid(u32),
    /// `process_resident_memory_bytes` of the broker's `/metrics`.
    Metrics,
}

impl RssSource {
    /// `--broker-pid`, else `/metrics` when it has process memory, else
    /// the process listening on the target's port.
    pub async fn find(target: &Target, pid: Option<u32>) -> Option<RssSource> {
        if let Some(pid) = pid {
            return Some(RssSource::Pid(pid));
        }
        if let Ok(text) = fetch_metrics(target).await
            && metric_value(&text, "process_resident_memory_bytes").is_some()
        {
            return Some(RssSource::Metrics);
        }
        pid_listening_on(target.addr().port()).map(RssSource::Pid)
    }

    pub fn describe(&self) -> String {
        match self {
            RssSource::Pid(pid) => format!("/proc/{pid}/status VmRSS"),
            RssSource::Metrics => "/metrics process_resident_memory_bytes".into(),
        }
    }

    /// The resident memory now, in bytes.
    pub async fn sample(&self, target: &Target) -> Option<u64> {
        match self {
            RssSource::Pid(pid) => vm_rss(*pid),
            RssSource::Metrics => fetch_metrics(target)
                .await
                .ok()
                .and_then(|t| metric_value(&t, "process_resident_memory_bytes"))
                .map(|v| v as u64),
        }
    }
}

/// VmRSS of a process, in bytes.
pub fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The process with a listening TCP socket on `port` (IPv4 or IPv6), by
/// matching the socket's inode in `/proc/net/tcp*` with `/proc/*/fd`.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// `GET /metrics` over a plain HTTP/1.1 connection.
pub async fn fetch_metrics(target: &Target) -> anyhow::Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(target.addr()).await?;
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.addr()
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .context("GET /metrics timed out")??;
    let (status, body) = read_answer(&raw).context("bad HTTP response")?;
    if status != 200 {
        bail!("GET /metrics: {status}");
    }
    Ok(body)
}

/// The sum of a metric's samples (all label sets) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// The broker's `casebroker_connections` gauge (all roles), if reachable.
pub async fn broker_connections(target: &Target) -> Option<f64> {
    let text = fetch_metrics(target).await.ok()?;
    metric_value(&text, "casebroker_connections")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_read() {
        let text = "# HELP x\ncasebroker_connections{role=\"agent\"} 3\n\
                    casebroker_connections{role=\"customer\"} 4\n\
                    casebroker_connections_total{role=\"agent\"} 9\n";
        assert_eq!(metric_value(text, "casebroker_connections"), Some(7.0));
        assert_eq!(metric_value(text, "process_resident_memory_bytes"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(vm_rss(std::process::id()).unwrap_or(0) > 0);
    }
}
