//! The `fanout` command: it builds the run from its flags, runs it
//! against casebroker and then, with `--baseline` or `--baseline-url`, the
//! same run against a baseline server (started here for `--baseline`),
//! and reports both with the ratios casebroker / baseline.

use anyhow::Context;

use super::flags::FanoutArgs;
use crate::baseline::{self, Baseline};
use crate::fanout::{self, FanoutOpts};
use crate::report::{Progress, Report};
use crate::stats::{Summary, round3};
use crate::target::Target;

pub(super) async fn fanout_cmd(a: FanoutArgs) -> anyhow::Result<Report> {
    let url_baseline = match &a.baseline_url {
        Some(url) => Some(Target::new(url, a.common.source_addrs)?),
        None => None,
    };
    if a.dashboard_url.len() > 16 {
        anyhow::bail!("--dashboard-url may be given at most 16 times");
    }
    if !a.dashboard_url.is_empty() && (a.baseline.is_some() || a.baseline_url.is_some()) {
        anyhow::bail!(
            "--dashboard-url cannot be combined with a baseline (a baseline is one server)"
        );
    }
    let dashboard_targets = a
        .dashboard_url
        .iter()
        .map(|u| Target::new(u, a.common.source_addrs))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = FanoutOpts {
        target: a.common.target()?,
        dashboard_targets,
        token: a.common.token.clone(),
        group: a.group.clone(),
        dashboards: a.dashboards as usize,
        seconds: a.common.seconds,
        rate: a.rate,
        window: a.window,
        progress: !a.common.no_progress,
    };
    // Started before casebroker's run, so a baseline that cannot start
    // fails the run at once; idle until its turn. The guard kills it
    // however the run ends.
    let started = match a.baseline {
        Some(kind) => Some(Baseline::start(kind, a.baseline_exe.clone()).await?),
        None => None,
    };
    let pace = match a.rate {
        Some(r) => format!("{r} changes/s"),
        None => format!("as fast as they keep up, window {}", a.window),
    };
    let bar = Progress::new(opts.progress, opts.dashboards as u64);
    let main = fanout::run(&opts, &bar)
        .await
        .with_context(|| format!("fanout against {}", opts.target.url()))?;
    let mut r = Report::new(format!(
        "fanout: {} dashboards, {pace}, {} s",
        opts.dashboards, opts.seconds
    ));
    main.fill(&mut r, "");
    r.json = main.json();
    r.set("scenario", "fanout");
    r.set("url", opts.target.url());
    r.set("rate", a.rate);
    r.latency.push(("casebroker".into(), main.latency.clone()));
    r.failed = !main.clean();
    let baseline = match (&started, url_baseline) {
        (Some(b), _) => Some((
            b.kind().name(),
            Some(b.kind()),
            Target::new(&b.url(), a.common.source_addrs)?,
        )),
        (None, Some(target)) => Some(("baseline", None, target)),
        (None, None) => None,
    };
    if let Some((label, kind, target)) = baseline {
        let url = target.url().to_string();
        let other = fanout::run(&FanoutOpts { target, ..opts }, &bar)
            .await
            .with_context(|| format!("fanout against the baseline {url}"))?;
        if let Some(kind) = kind {
            r.row("baseline", format!("{} ({})", kind.name(), kind.describe()));
        }
        other.fill(&mut r, label);
        let ratio = ratio_of(main.delivered_per_sec(), other.delivered_per_sec());
        let p99_ratio = ratio_of(
            Summary::of(&main.latency).p99_ms,
            Summary::of(&other.latency).p99_ms,
        );
        r.row(format!("ratio casebroker / {label}"), times(ratio));
        r.row(format!("p99 ratio casebroker / {label}"), times(p99_ratio));
        r.set("ratio", ratio.map(round3));
        r.set("p99_ratio", p99_ratio.map(round3));
        let mut b = other.json();
        b.insert("url".into(), url.into());
        b.insert(
            "kind".into(),
            kind.map_or("url", baseline::Kind::name).into(),
        );
        b.insert("corked".into(), kind.map(baseline::Kind::corked).into());
        r.set("baseline", serde_json::Value::Object(b));
        r.latency.push((label.into(), other.latency.clone()));
        r.failed |= !other.clean();
    }
    drop(started);
    Ok(r)
}

/// `a / b`, when `b` is a positive figure.
fn ratio_of(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// A ratio as the table shows it: `0.83×`.
fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_show_two_decimals() {
        assert_eq!(times(ratio_of(83.0, 100.0)), "0.83×");
        assert_eq!(times(ratio_of(1.0, 0.0)), "n/a");
    }
}
