//! The service's metrics, written in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use action_host::{ErrorKind, Host, Invocation, InvokeError};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

/// Counters and histograms of invocations, by action.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Each action's counters, kept after it is deleted so the totals never
    /// go back. The lock is taken when an action is installed, refused or
    /// shown, never by a call: the serving entry holds its own counters.
    actions: Mutex<BTreeMap<String, Arc<ActionStats>>>,
}

/// What a call came to, as its counters and its record name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The action ran and reported success.
    Success,
    /// The action ran and reported a business failure.
    Failure,
    /// The call ended in an error of this kind.
    Error(ErrorKind),
}

impl Ended {
    /// Every way a call can end, in the order of an action's counters.
    const ALL: [Ended; 8] = [
        Ended::Success,
        Ended::Failure,
        Ended::Error(ErrorKind::InvalidInput),
        Ended::Error(ErrorKind::Upstream),
        Ended::Error(ErrorKind::Denied),
        Ended::Error(ErrorKind::Timeout),
        Ended::Error(ErrorKind::Internal),
        Ended::Error(ErrorKind::UnknownAction),
    ];

    /// How `result` ended.
    pub(crate) fn of(result: &Result<Invocation, InvokeError>) -> Ended {
        match result {
            Ok(done) if done.success => Ended::Success,
            Ok(_) => Ended::Failure,
            Err(error) => Ended::Error(error.kind),
        }
    }

    /// `success`, `failure` or the error kind's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ended::Success => "success",
            Ended::Failure => "failure",
            Ended::Error(kind) => kind.as_str(),
        }
    }

    /// Its place in [`Ended::ALL`]; a kind the library adds fails to
    /// compile here rather than being counted as another.
    fn index(self) -> usize {
        match self {
            Ended::Success => 0,
            Ended::Failure => 1,
            Ended::Error(kind) => match kind {
                ErrorKind::InvalidInput => 2,
                ErrorKind::Upstream => 3,
                ErrorKind::Denied => 4,
                ErrorKind::Timeout => 5,
                ErrorKind::Internal => 6,
                ErrorKind::UnknownAction => 7,
            },
        }
    }
}

/// One action's counters, updated without a lock.
#[derive(Default)]
pub(crate) struct ActionStats {
    /// Calls by how they ended, in the order of [`Ended::ALL`].
    results: [AtomicU64; Ended::ALL.len()],
    /// Calls no longer than each of [`BUCKETS`].
    buckets: [AtomicU64; BUCKETS.len()],
    sum_nanos: AtomicU64,
    count: AtomicU64,
    /// Calls refused with 429.
    overloaded: AtomicU64,
}

impl ActionStats {
    /// Records how one call ended and how long it took.
    pub(crate) fn invocation(&self, ended: Ended, duration: Duration) {
        self.results[ended.index()].fetch_add(1, Ordering::Relaxed);
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a call refused because of the concurrency bounds.
    pub(crate) fn refused(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls by result, for the results seen.
    fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Ended::ALL
            .iter()
            .zip(&self.results)
            .map(|(ended, n)| (ended.name(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
    }
}

impl Metrics {
    /// The counters of `action`, made on first use.
    pub(crate) fn action(&self, action: &str) -> Arc<ActionStats> {
        let mut actions = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        // Look up before inserting: the name is allocated only the first time.
        if let Some(stats) = actions.get(action) {
            return Arc::clone(stats);
        }
        let stats = Arc::new(ActionStats::default());
        actions.insert(action.to_owned(), Arc::clone(&stats));
        stats
    }

    fn all(&self) -> Vec<(String, Arc<ActionStats>)> {
        let actions = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        actions
            .iter()
            .map(|(name, stats)| (name.clone(), Arc::clone(stats)))
            .collect()
    }

    fn get(&self, action: &str) -> Option<Arc<ActionStats>> {
        let actions = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        actions.get(action).cloned()
    }

    /// Invocations of `action` by result.
    pub(crate) fn counts(&self, action: &str) -> BTreeMap<String, u64> {
        self.get(action)
            .map(|stats| {
                stats
                    .counts()
                    .map(|(result, n)| (result.to_owned(), n))
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
        let stats = self.get(action)?;
        let count = stats.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let middle = count.div_ceil(2);
        let bound = BUCKETS
            .iter()
            .zip(&stats.buckets)
            .find(|(_, n)| n.load(Ordering::Relaxed) >= middle)
            .map_or(BUCKETS[BUCKETS.len() - 1], |(bound, _)| *bound);
        Some(bound * 1000.0)
    }

    /// Everything, in the Prometheus text format. Action names are plain
    /// (a-z, 0-9, '-', '_'), so label values need no escaping.
    pub(crate) fn render(&self, host: &Host) -> String {
        let actions = self.all();
        let mut out = String::new();
        out.push_str("# HELP action_host_invocations_total Invocations by action and result.\n");
        out.push_str("# TYPE action_host_invocations_total counter\n");
        for (action, stats) in &actions {
            for (result, n) in stats.counts() {
                let _ = writeln!(
                    out,
                    "action_host_invocations_total{{action=\"{action}\",result=\"{result}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP action_host_invocation_duration_seconds Time of an invocation, from the request to the result.\n");
        out.push_str("# TYPE action_host_invocation_duration_seconds histogram\n");
        for (action, stats) in &actions {
            // A call ending while this reads may be in a bucket and not yet
            // in the count: no bucket shows more than the count.
            let count = stats.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            for (bound, n) in BUCKETS.iter().zip(&stats.buckets) {
                let n = n.load(Ordering::Relaxed).min(count);
                let _ = writeln!(
                    out,
                    "action_host_invocation_duration_seconds_bucket{{action=\"{action}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "action_host_invocation_duration_seconds_bucket{{action=\"{action}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "action_host_invocation_duration_seconds_sum{{action=\"{action}\"}} {}",
                stats.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "action_host_invocation_duration_seconds_count{{action=\"{action}\"}} {count}"
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
        for (action, stats) in &actions {
            let n = stats.overloaded.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "action_host_overloaded_total{{action=\"{action}\"}} {n}"
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_bound_of_the_bucket_that_holds_the_middle_call() {
        let metrics = Metrics::default();
        assert_eq!(metrics.p50_ms("greeting"), None);
        let greeting = metrics.action("greeting");
        assert_eq!(metrics.p50_ms("greeting"), None, "no call yet");
        for micros in [40, 80, 90, 2_000, 9_000_000] {
            greeting.invocation(Ended::Success, Duration::from_micros(micros));
        }
        // The third of five calls took 90 us: the 100 us bucket.
        assert_eq!(metrics.p50_ms("greeting"), Some(0.1));
        for _ in 0..10 {
            greeting.invocation(Ended::Success, Duration::from_secs(9));
        }
        assert_eq!(
            metrics.p50_ms("greeting"),
            Some(5000.0),
            "past the last bucket"
        );
    }

    #[test]
    fn every_way_a_call_ends_has_its_own_counter_and_name() {
        for (place, ended) in Ended::ALL.iter().enumerate() {
            assert_eq!(ended.index(), place, "{ended:?}");
        }
        let mut names: Vec<_> = Ended::ALL.iter().map(|e| e.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Ended::ALL.len());
    }

    #[test]
    fn each_actions_counts_histogram_and_refusals_are_rendered() {
        let metrics = Metrics::default();
        let greeting = metrics.action("greeting");
        greeting.invocation(Ended::Success, Duration::from_micros(80));
        greeting.invocation(Ended::Success, Duration::from_millis(3));
        greeting.invocation(Ended::Error(ErrorKind::Timeout), Duration::from_secs(2));
        greeting.refused();
        metrics.action("quiet");
        let host = action_host::Host::new(action_host::HostConfig {
            pool_size: 1,
            ..action_host::HostConfig::default()
        })
        .unwrap();
        let text = metrics.render(&host);
        for line in [
            "action_host_invocations_total{action=\"greeting\",result=\"success\"} 2",
            "action_host_invocations_total{action=\"greeting\",result=\"timeout\"} 1",
            "action_host_invocation_duration_seconds_bucket{action=\"greeting\",le=\"0.0001\"} 1",
            "action_host_invocation_duration_seconds_bucket{action=\"greeting\",le=\"0.005\"} 2",
            "action_host_invocation_duration_seconds_bucket{action=\"greeting\",le=\"5\"} 3",
            "action_host_invocation_duration_seconds_bucket{action=\"greeting\",le=\"+Inf\"} 3",
            "action_host_invocation_duration_seconds_sum{action=\"greeting\"} 2.00308",
            "action_host_invocation_duration_seconds_count{action=\"greeting\"} 3",
            "action_host_overloaded_total{action=\"greeting\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        assert!(
            !text.contains("failure"),
            "a result never seen is not a series"
        );
        assert!(
            !text.contains("quiet"),
            "an action never called has no series"
        );
        assert_eq!(
            metrics.counts("greeting"),
            BTreeMap::from([("success".into(), 2), ("timeout".into(), 1)])
        );
    }
}
