//! Reading the broker's `/metrics` text (the Prometheus text format): the
//! one parser the tests and the load tester share.

/// The value of one series, `name{labels}` exactly as rendered (comment
/// lines skipped); `None` when the text has no such series or its value
/// does not parse.
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::series;

    #[test]
    fn a_series_is_found_by_its_whole_name_with_labels() {
        let text = "# HELP x_total a counter\n# TYPE x_total counter\n\
                    x_total{result=\"ok\"} 7\nx_total{result=\"no\"} 2\nx_total_more 5\ny 1.5e3\nbad oops\n";
        assert_eq!(series(text, "x_total{result=\"ok\"}"), Some(7.0));
        assert_eq!(series(text, "x_total{result=\"no\"}"), Some(2.0));
        assert_eq!(series(text, "y"), Some(1500.0));
        assert_eq!(series(text, "x_total"), None, "a prefix is not the series");
        assert_eq!(series(text, "bad"), None, "a value that does not parse");
        assert_eq!(series(text, "absent"), None);
    }
}
