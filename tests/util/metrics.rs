//! The broker's `/metrics` as tests read it: a scrape, one series' value,
//! and waiting (bounded) for a series to reach a value.

use std::time::Duration;

use super::WAIT;
use super::endpoint::Endpoint;

// Metrics -------------------------------------------------------------------

/// The broker's `/metrics` text (asserting a 200).
pub async fn scrape(at: &Endpoint) -> String {
    let (status, _, text) = at.page("/metrics", &[]).await;
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

/// The value of one series (`name{labels}` exactly as rendered).
pub use casebroker_testkit::metrics::series as metric;

/// The value of one series, which must be there.
pub fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Polls `/metrics` until `series` is there with a value for which `ok`
/// holds (`what` says which, for the failure); returns that value. Panics
/// with the last scrape when it does not within `WAIT`.
pub async fn wait_metric(
    server: &Endpoint,
    series: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    wait_metric_within(server, series, what, WAIT, ok).await
}

/// [`wait_metric`], for at most `limit`.
pub async fn wait_metric_within(
    server: &Endpoint,
    series: &str,
    what: &str,
    limit: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = scrape(server).await;
        if let Some(v) = metric(&text, series)
            && ok(v)
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {what} within {limit:?}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
