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
//! used only when the value needs it. That filter keeps the service's own
//! spans at any level it logs at (see `WithContext`), so that a warning
//! still names its request, action and invocation under `RUST_LOG=warn`;
//! with span or field directives, `EnvFilter`'s rules alone apply.
//!
//! [`PlainFields`] writes the fields of the text format without colour.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer;
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
        return (Box::new(WithContext(targets)), None);
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
fn default_targets() -> WithContext {
    WithContext(Targets::new().with_default(Level::INFO))
}

/// A targets-and-levels filter that also keeps the service's own spans
/// wherever it lets any line through. A span writes no line of its own; it
/// names the request, the action and the invocation on every line logged
/// inside it. Those spans are at `info`, so without this `RUST_LOG=warn`
/// would drop them and leave the very warnings and errors an operator
/// filters for without the request they belong to.
struct WithContext(Targets);

impl WithContext {
    fn keeps(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        if metadata.is_span() && target.starts_with(OWN_TARGETS) && *metadata.level() <= Level::INFO
        {
            self.0.would_enable(target, &Level::ERROR)
        } else {
            self.0.would_enable(target, metadata.level())
        }
    }
}

/// The prefix of the targets of the service's and the library's own code.
const OWN_TARGETS: &str = "action_host";

impl<S: Subscriber> Layer<S> for WithContext {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.keeps(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: layer::Context<'_, S>) -> bool {
        self.keeps(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // Raised to `info` so that the spans' call sites are asked at all;
        // every other `info` call site is then refused once and remembered.
        match <Targets as Layer<S>>::max_level_hint(&self.0) {
            Some(LevelFilter::OFF) => Some(LevelFilter::OFF),
            hint => hint.map(|hint| hint.max(LevelFilter::INFO)),
        }
    }
}

/// The fields of a log line or span, written exactly as tracing-subscriber's
/// default text format writes them without colour (`name="text" n=3`), for
/// less: that format styles each field's name and `=` even when it has no
/// colour to add, an allocation each, and grows a span's text a few bytes at
/// a time. Every request has a span with five fields, so that was a dozen
/// allocations per request for lines that are almost never written
/// (BENCHMARKS.md). Here the common fields (names, quoted text that needs no
/// escaping, numbers, `%` and `?` values) are collected on the stack and
/// written at once; anything else (a message, an error, text to escape) is
/// handed to tracing-subscriber's own visitor, so the output is the same.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut line = Fields::default();
        fields.record(&mut line);
        line.result?;
        writer.write_str(line.text.as_str())
    }
}

/// What [`PlainFields`] collects of one set of fields.
struct Fields {
    text: StackText,
    /// Whether a field was written, so the next needs a space before it
    /// (the message may have written nothing and still count).
    written: bool,
    result: fmt::Result,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            text: StackText::default(),
            written: false,
            result: Ok(()),
        }
    }
}

impl Fields {
    /// Writes the separator and `name=`, or returns `false` for a name
    /// tracing-subscriber treats specially (`message`, raw `r#` names, the
    /// `log.` metadata of records from the `log` crate).
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name == "message" || name.starts_with("r#") || name.starts_with("log.") {
            return false;
        }
        if self.written {
            self.text.push(" ");
        }
        self.written = true;
        self.text.push(name);
        self.text.push("=");
        true
    }

    /// Hands one field to tracing-subscriber's own visitor.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(Writer::new(&mut self.text), !self.written);
        record(&mut visitor);
        self.result = self.result.and(visitor.finish());
        // It writes every field but the `log.` metadata.
        self.written |= !field.name().starts_with("log.");
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Debug quotes text, escaping `"`, `\`, controls and some Unicode;
        // text that needs none of that is written as is.
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if plain && self.start(field) {
            self.text.push("\"");
            self.text.push(value);
            self.text.push("\"");
        } else {
            self.delegate(field, |visitor| visitor.record_str(field, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = self.result.and(write!(self.text, "{value}"));
        } else {
            self.delegate(field, |visitor| visitor.record_u64(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = self.result.and(write!(self.text, "{value}"));
        } else {
            self.delegate(field, |visitor| visitor.record_i64(field, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.text.push(if value { "true" } else { "false" });
        } else {
            self.delegate(field, |visitor| visitor.record_bool(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |visitor| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.result = self.result.and(write!(self.text, "{value:?}"));
        } else {
            self.delegate(field, |visitor| visitor.record_debug(field, value));
        }
    }
}

/// Text kept on the stack while it is short: a span's fields fit, and then
/// cost the line one allocation instead of one per doubling.
struct StackText {
    short: [u8; StackText::SHORT],
    len: usize,
    long: String,
}

impl StackText {
    const SHORT: usize = 256;

    fn push(&mut self, text: &str) {
        if self.long.is_empty() && self.len + text.len() <= StackText::SHORT {
            self.short[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
            self.len += text.len();
        } else {
            if self.long.is_empty() {
                let mut long = String::with_capacity(2 * StackText::SHORT + text.len());
                long.push_str(self.short_str());
                self.long = long;
            }
            self.long.push_str(text);
        }
    }

    fn short_str(&self) -> &str {
        // Only whole `&str`s are copied in, so the bytes are UTF-8.
        std::str::from_utf8(&self.short[..self.len]).expect("whole strings were pushed")
    }

    fn as_str(&self) -> &str {
        if self.long.is_empty() {
            self.short_str()
        } else {
            &self.long
        }
    }
}

impl Default for StackText {
    fn default() -> StackText {
        StackText {
            short: [0; StackText::SHORT],
            len: 0,
            long: String::new(),
        }
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push(text);
        Ok(())
    }
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
    fn warnings_keep_the_request_they_belong_to() {
        let log = || {
            let request = tracing::info_span!("request", request_id = "r-1", action = "greeting");
            let _in_request = request.enter();
            // Another crate's span is not the service's context: filtered as ever.
            let connection = tracing::info_span!(target: "hyper", "connection", peer = 7u64);
            let _in_connection = connection.enter();
            tracing::info!("ran");
            tracing::warn!("slow upstream");
        };
        for spec in ["warn", "error,action_host_server=warn"] {
            let text = filtered_text_of(spec, PlainFields, log);
            assert!(
                text.contains("WARN request{request_id=\"r-1\" action=\"greeting\"}: "),
                "RUST_LOG={spec}: {text}"
            );
            assert!(text.contains("slow upstream"), "RUST_LOG={spec}: {text}");
            assert!(!text.contains("connection"), "RUST_LOG={spec}: {text}");
            assert!(!text.contains("ran"), "RUST_LOG={spec}: {text}");
        }
        let all = filtered_text_of("info", PlainFields, log);
        assert!(all.contains("connection{peer=7}"), "{all}");
        assert!(all.contains("ran"), "{all}");
        let quiet_hyper = filtered_text_of("info,hyper=warn", PlainFields, log);
        assert!(quiet_hyper.contains("request{"), "{quiet_hyper}");
        assert!(!quiet_hyper.contains("connection"), "{quiet_hyper}");
        for spec in ["off", "warn,action_host_server=off"] {
            let text = filtered_text_of(spec, PlainFields, log);
            assert!(text.is_empty(), "RUST_LOG={spec}: {text}");
        }
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

    /// The text lines `log` writes through the service's text format with
    /// the field formatter `fields`.
    fn text_of<N>(fields: N, log: impl Fn()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        filtered_text_of("trace", fields, log)
    }

    /// [`text_of`], filtered as `RUST_LOG=spec` filters the service's log.
    fn filtered_text_of<N>(spec: &str, fields: N, log: impl Fn()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .fmt_fields(fields);
        let (filter, refused) = filter(Some(spec));
        assert_eq!(refused, None);
        let dispatch = tracing::Dispatch::new(Registry::default().with(filter).with(layer));
        tracing::dispatcher::with_default(&dispatch, log);
        String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
    }

    #[derive(Debug)]
    struct Failed(Option<Box<Failed>>);
    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "failed {}",
                if self.0.is_some() { "outer" } else { "inner" }
            )
        }
    }
    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0.as_deref().map(|e| e as _)
        }
    }

    /// Every kind of field, in events and in spans, and text that needs
    /// escaping: written the same as tracing-subscriber's default.
    #[test]
    fn plain_fields_write_what_the_default_writes() {
        let log = || {
            let long = "x".repeat(300);
            let span = tracing::info_span!(
                "request",
                method = %"POST",
                path = "/v1/actions/greeting/invoke",
                request_id = "2ce535f8-e461-4187-af08-6f2978a15d75",
                action = tracing::field::Empty,
                invocation_id = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("action", "greeting");
            span.record("invocation_id", tracing::field::display("01a2-7"));
            tracing::info!("plain message");
            tracing::info!(n = 3, m = -4, yes = true, ratio = 0.25, "numbers {}", 1);
            tracing::warn!(text = "quote \" and \\ and\nline", empty = "", "escapes");
            tracing::warn!(unicode = "caf\u{e9} \u{1b}[31mred", tab = "a\tb");
            tracing::warn!(r#type = "raw", shown = %"display", debugged = ?Some("x"));
            tracing::error!(
                error = &Failed(Some(Box::new(Failed(None)))) as &dyn std::error::Error
            );
            tracing::error!(error = &Failed(None) as &dyn std::error::Error, "alone");
            tracing::info!(long = long.as_str(), "a field longer than the stack buffer");
            let inner = tracing::info_span!("inner", long = long.as_str(), count = 2u64);
            inner.in_scope(|| tracing::info!(message = "message as a field", after = 1));
            tracing::info!("\u{1b}[2Jmessage with an escape");
        };
        let ours = text_of(PlainFields, log);
        let theirs = text_of(tracing_subscriber::fmt::format::DefaultFields::new(), log);
        assert_eq!(ours.lines().count(), 10, "{ours}");
        for (ours, theirs) in ours.lines().zip(theirs.lines()) {
            assert_eq!(ours, theirs);
        }
        assert_eq!(ours, theirs);
    }

    proptest::proptest! {
        /// Any text in a field, of a span or an event, is written as the
        /// default writes it (quoted and escaped alike).
        #[test]
        fn any_text_is_written_as_the_default_writes_it(text in ".{0,300}", message in ".{0,40}") {
            let log = || {
                let span = tracing::info_span!("s", text = text.as_str());
                let _entered = span.enter();
                span.record("text", text.as_str());
                tracing::info!(text = text.as_str(), "{message}");
            };
            let ours = text_of(PlainFields, log);
            let theirs = text_of(tracing_subscriber::fmt::format::DefaultFields::new(), log);
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
