//! Which log lines `RUST_LOG` lets through.
//!
//! `EnvFilter` understands every directive, span and field filters too, and
//! pays for that on every span: it takes a lock shared by all threads on each
//! span's creation, entry, exit and close, whether or not any directive names
//! a span. Each request enters its spans many times (once per poll of every
//! layer that instruments it), so under load on several threads that lock's
//! cache line moves between cores all the time. A filter of targets and
//! levels only (`info`, `action_host=debug,hyper=warn`), which is what
//! `RUST_LOG` almost always holds, is therefore read by [`Targets`], which
//! decides once per call site and keeps no state per span; `EnvFilter` is
//! used only when the value needs it.

use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// The filter when `RUST_LOG` is unset, empty or not a filter.
pub const DEFAULT_FILTER: &str = "info";

/// A log filter layer.
pub type Filter<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// The filter for `spec` (`RUST_LOG`'s value; `None` or blank for
/// [`DEFAULT_FILTER`]). A `spec` that is not a filter gives the default filter
/// and the reason, for the caller to report.
pub fn filter<S>(spec: Option<&str>) -> (Filter<S>, Option<String>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let spec = spec.map(str::trim).filter(|spec| !spec.is_empty());
    let Some(spec) = spec else {
        return (Box::new(default_targets()), None);
    };
    if let Ok(targets) = spec.parse::<Targets>() {
        return (Box::new(targets), None);
    }
    match EnvFilter::try_new(spec) {
        Ok(filter) => (Box::new(filter), None),
        Err(why) => (
            Box::new(default_targets()),
            Some(format!("RUST_LOG `{spec}` is not a log filter: {why}")),
        ),
    }
}

/// [`DEFAULT_FILTER`] as targets.
fn default_targets() -> Targets {
    Targets::new().with_default(tracing::Level::INFO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::Registry;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Whether a subscriber filtered by `spec` takes an event at `level` from
    /// `target`.
    fn lets_through(spec: Option<&str>, target: &str, level: Level) -> bool {
        let (filter, refused) = filter(spec);
        assert_eq!(refused, None);
        let subscriber = Registry::default().with(filter);
        let dispatch = tracing::Dispatch::new(subscriber);
        tracing::dispatcher::with_default(&dispatch, || match (target, level) {
            ("action_host", Level::DEBUG) => {
                tracing::enabled!(target: "action_host", Level::DEBUG)
            }
            ("action_host", Level::INFO) => tracing::enabled!(target: "action_host", Level::INFO),
            ("hyper", Level::INFO) => tracing::enabled!(target: "hyper", Level::INFO),
            ("hyper", Level::WARN) => tracing::enabled!(target: "hyper", Level::WARN),
            _ => unreachable!("not a case of these tests"),
        })
    }

    #[test]
    fn unset_or_blank_is_info() {
        for spec in [None, Some(""), Some("  ")] {
            assert!(lets_through(spec, "action_host", Level::INFO));
            assert!(!lets_through(spec, "action_host", Level::DEBUG));
        }
    }

    #[test]
    fn targets_and_levels_filter_by_target() {
        let spec = Some("info,action_host=debug,hyper=warn");
        assert!(lets_through(spec, "action_host", Level::DEBUG));
        assert!(!lets_through(spec, "hyper", Level::INFO));
        assert!(lets_through(spec, "hyper", Level::WARN));
    }

    #[test]
    fn span_directives_still_work() {
        let spec = "warn,[request{action=greeting}]=debug";
        assert!(spec.parse::<Targets>().is_err());
        assert!(!lets_through(Some(spec), "action_host", Level::INFO));
        let (filter, refused) = filter(Some(spec));
        assert_eq!(refused, None);
        let dispatch = tracing::Dispatch::new(Registry::default().with(filter));
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::warn_span!("request", action = "greeting");
            let _entered = span.enter();
            assert!(tracing::enabled!(Level::DEBUG));
        });
    }

    #[test]
    fn a_bad_filter_is_named_and_the_default_used() {
        let (filter, refused) = filter::<Registry>(Some("action_host=loud"));
        let why = refused.unwrap();
        assert!(
            why.contains("`action_host=loud` is not a log filter"),
            "{why}"
        );
        let dispatch = tracing::Dispatch::new(Registry::default().with(filter));
        tracing::dispatcher::with_default(&dispatch, || {
            assert!(tracing::enabled!(Level::INFO));
            assert!(!tracing::enabled!(Level::DEBUG));
        });
    }
}
