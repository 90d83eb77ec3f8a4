//! The service's metrics, written in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use action_host::Host;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

/// Counters and histograms of invocations, by action.
#[derive(Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (action, result) -> count; result is `success`, `failure` or an error kind.
    invocations: BTreeMap<String, BTreeMap<&'static str, u64>>,
    latency: BTreeMap<String, Histogram>,
    /// action -> calls refused with 429.
    overloaded: BTreeMap<String, u64>,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Metrics {
    /// Records one invocation's result and duration.
    pub(crate) fn invocation(&self, action: &str, result: &'static str, duration: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Look up before inserting: this runs on every call, and the keys
        // need allocating only the first time.
        if !inner.invocations.contains_key(action) {
            inner.invocations.insert(action.to_owned(), BTreeMap::new());
        }
        let results = inner.invocations.get_mut(action).expect("inserted above");
        *results.entry(result).or_default() += 1;
        if !inner.latency.contains_key(action) {
            inner
                .latency
                .insert(action.to_owned(), Histogram::default());
        }
        let histogram = inner.latency.get_mut(action).expect("inserted above");
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// Records a call refused because of the concurrency bounds.
    pub(crate) fn overloaded(&self, action: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.overloaded.entry(action.to_owned()).or_default() += 1;
    }

    /// Invocations of `action` by result.
    pub(crate) fn counts(&self, action: &str) -> BTreeMap<String, u64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .invocations
            .get(action)
            .map(|results| {
                results
                    .iter()
                    .map(|(result, n)| ((*result).to_owned(), *n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The median duration of `action`'s calls in milliseconds, as the
    /// histogram can tell it: the upper bound of the bucket that holds the
    /// middle call (Prometheus's `histogram_quantile` interpolates inside
    /// it; a page needs no more than its order of magnitude). `None` before
    /// the first call; past the last bucket, its bound.
    pub(crate) fn p50_ms(&self, action: &str) -> Option<f64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = inner.latency.get(action).filter(|h| h.count > 0)?;
        let middle = histogram.count.div_ceil(2);
        let bound = BUCKETS
            .iter()
            .zip(histogram.buckets)
            .find(|(_, n)| *n >= middle)
            .map_or(BUCKETS[BUCKETS.len() - 1], |(bound, _)| *bound);
        Some(bound * 1000.0)
    }

    /// Everything, in the Prometheus text format. Action names are plain
    /// (a-z, 0-9, '-', '_'), so label values need no escaping.
    pub(crate) fn render(&self, host: &Host) -> String {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone_data();
        let mut out = String::new();
        out.push_str("# HELP action_host_invocations_total Invocations by action and result.\n");
        out.push_str("# TYPE action_host_invocations_total counter\n");
        for (action, result, n) in inner.invocations.iter().flat_map(|(action, results)| {
            results.iter().map(move |(result, n)| (action, result, n))
        }) {
            let _ = writeln!(
                out,
                "action_host_invocations_total{{action=\"{action}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP action_host_invocation_duration_seconds Time of an invocation, from the request to the result.\n");
        out.push_str("# TYPE action_host_invocation_duration_seconds histogram\n");
        for (action, h) in &inner.latency {
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "action_host_invocation_duration_seconds_bucket{{action=\"{action}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "action_host_invocation_duration_seconds_bucket{{action=\"{action}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "action_host_invocation_duration_seconds_sum{{action=\"{action}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "action_host_invocation_duration_seconds_count{{action=\"{action}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP action_host_outbound_requests_total Outbound HTTP requests by action and result.\n");
        out.push_str("# TYPE action_host_outbound_requests_total counter\n");
        let outbound = host.outbound_counts();
        for (action, result, n) in &outbound {
            let _ = writeln!(
                out,
                "action_host_outbound_requests_total{{action=\"{action}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP action_host_outbound_denials_total Outbound requests the policy denied, by action.\n");
        out.push_str("# TYPE action_host_outbound_denials_total counter\n");
        for (action, _, n) in outbound.iter().filter(|(_, result, _)| *result == "denied") {
            let _ = writeln!(
                out,
                "action_host_outbound_denials_total{{action=\"{action}\"}} {n}"
            );
        }
        out.push_str("# HELP action_host_overloaded_total Calls refused with 429 by the concurrency bounds.\n");
        out.push_str("# TYPE action_host_overloaded_total counter\n");
        for (action, n) in &inner.overloaded {
            let _ = writeln!(
                out,
                "action_host_overloaded_total{{action=\"{action}\"}} {n}"
            );
        }
        out.push_str("# HELP action_host_compilations_total Components compiled (not read from the artifact cache).\n");
        out.push_str("# TYPE action_host_compilations_total counter\n");
        let _ = writeln!(
            out,
            "action_host_compilations_total {}",
            host.compilations()
        );
        out.push_str("# HELP action_host_artifacts_rejected_total Cached artifacts not loaded because their seal did not hold.\n");
        out.push_str("# TYPE action_host_artifacts_rejected_total counter\n");
        let _ = writeln!(
            out,
            "action_host_artifacts_rejected_total {}",
            host.rejected_artifacts()
        );
        out
    }
}

impl Inner {
    fn clone_data(&self) -> Inner {
        Inner {
            invocations: self.invocations.clone(),
            latency: self.latency.clone(),
            overloaded: self.overloaded.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_bound_of_the_bucket_that_holds_the_middle_call() {
        let metrics = Metrics::default();
        assert_eq!(metrics.p50_ms("greeting"), None);
        for micros in [40, 80, 90, 2_000, 9_000_000] {
            metrics.invocation("greeting", "success", Duration::from_micros(micros));
        }
        // The third of five calls took 90 us: the 100 us bucket.
        assert_eq!(metrics.p50_ms("greeting"), Some(0.1));
        for _ in 0..10 {
            metrics.invocation("greeting", "success", Duration::from_secs(9));
        }
        assert_eq!(
            metrics.p50_ms("greeting"),
            Some(5000.0),
            "past the last bucket"
        );
    }
}
