//! The process's metrics, as `/metrics` exposes them. The recorder is the process's, shared
//! by the tests of one binary: a test reads series of its own cleaner names.

/// The value of the first sample of `metric` whose labels include every one of `labels`.
pub fn sample(metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    lethe_engine::telemetry::metrics::render()
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
            let (names, value) = rest.split_once("} ")?;
            labels
                .iter()
                .all(|(k, v)| names.split(',').any(|l| l == format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse().ok())?
        })
}

/// How many batched calls cleaner `name` made (`lethe_cleaner_batch_size`'s count).
pub fn batched_calls(name: &str) -> f64 {
    sample("lethe_cleaner_batch_size_count", &[("cleaner", name)]).unwrap_or(0.0)
}
