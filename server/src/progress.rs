//! What the service says while it loads its actions at start: a line per
//! step through `tracing`, and a progress bar on stderr when stderr is a
//! terminal. Log lines written while the bar shows are printed above it
//! ([`LogWriter`]), so the two never overwrite each other.

use action_host::StartsFrom;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::time::Duration;

/// The bar showing, if any: the log writer prints around it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Reports the start-up's progress.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress over `total` actions; with a bar when `bar` is asked for and
    /// stderr is a terminal.
    pub fn new(total: usize, bar: bool) -> Progress {
        if total > 0 {
            tracing::info!("loading {total} action(s), smallest first");
        }
        let bar = (bar && total > 0 && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} ready  {elapsed}  {msg}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            *BAR.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
            bar
        });
        Progress { bar }
    }

    /// Progress that says nothing (for tests and embedders).
    pub fn quiet() -> Progress {
        Progress { bar: None }
    }

    pub(crate) fn started(&self, name: &str, size: u64) {
        tracing::info!("loading {name} ({})", kib(size));
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loading {name}"));
        }
    }

    pub(crate) fn ready(
        &self,
        name: &str,
        took: Duration,
        compiled: bool,
        starts_from: Option<StartsFrom>,
    ) {
        let how = if compiled {
            "compiled"
        } else {
            "from the cached artifact"
        };
        let start = match starts_from {
            Some(StartsFrom::Describe) => ", calls start after describe()",
            _ => "",
        };
        tracing::info!("{name} ready in {:.2} s ({how}{start})", took.as_secs_f64());
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub(crate) fn failed(&self, name: &str, why: &str) {
        tracing::warn!("action `{name}` is not served: {why}");
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            *BAR.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        tracing::info!("every action found at start is loaded");
    }
}

fn kib(bytes: u64) -> String {
    if bytes == u64::MAX {
        "size unknown".into()
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Where the service's log lines go: stderr, printed above the progress bar
/// while one shows. Each line is written whole, at once.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

/// One log line on its way to stderr.
pub struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let bar = BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}
