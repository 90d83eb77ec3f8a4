//! The invocation's log: lines from the `log` import and from the guest's
//! stdout and stderr, kept in order under a byte cap.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal events; the guest's stdout.
    Info,
    /// Unexpected but handled; host notes such as a truncated log.
    Warn,
    /// Failures; the guest's stderr.
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The action's `log` import.
    Log,
    /// The action's standard output.
    Stdout,
    /// The action's standard error.
    Stderr,
    /// The host, about this invocation.
    Host,
}

/// One line of an invocation's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// How much it matters.
    pub level: Level,
    /// Where it came from.
    pub source: Source,
    /// The text, without a trailing newline.
    pub message: String,
}

/// The most bytes of host notes one invocation keeps.
pub(crate) const NOTE_CAP: usize = 4 << 10;

/// The most bytes of text from the guest (a URL, a header name) that a host
/// message repeats; the rest is cut.
pub(crate) const ECHO_CAP: usize = 200;

/// `text` as a host message may repeat it: at most [`ECHO_CAP`] bytes (cut at a
/// character boundary), with the length of what was cut.
pub(crate) fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    clip_at(text, ECHO_CAP)
}

/// `text` cut to at most `max` bytes at a character boundary, saying how much
/// was cut.
pub(crate) fn clip_at(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}... ({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

/// The log of one invocation, shared by the `log` import and the captured
/// stdout and stderr streams.
#[derive(Clone)]
pub(crate) struct LogSink(Arc<Mutex<LogBuffer>>);

struct LogBuffer {
    lines: Vec<LogLine>,
    cap: usize,
    used: usize,
    dropped_lines: usize,
    dropped_bytes: usize,
    /// Bytes of host notes kept, against [`NOTE_CAP`]; notes past it are counted.
    notes_used: usize,
    dropped_notes: usize,
    /// Output written to stdout and stderr since their last newline.
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl LogSink {
    /// An empty log that keeps at most `cap` bytes of messages.
    pub(crate) fn new(cap: usize) -> LogSink {
        LogSink(Arc::new(Mutex::new(LogBuffer {
            lines: Vec::new(),
            cap,
            used: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
            notes_used: 0,
            dropped_notes: 0,
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, LogBuffer> {
        // A poisoned lock only means another thread panicked mid-push; the
        // lines themselves are still whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a line, or counts it as dropped when the cap is reached.
    pub(crate) fn push(&self, level: Level, source: Source, message: &str) {
        self.lock().push(level, source, message);
    }

    /// Adds a host note. Notes have a cap of their own ([`NOTE_CAP`]), so the
    /// action's log cannot crowd them out, and past it they are counted, not
    /// kept: an action that provokes a note in a loop (a refused request, say)
    /// cannot grow the host's memory.
    pub(crate) fn note(&self, level: Level, message: String) {
        let mut buffer = self.lock();
        if buffer.notes_used + message.len() > NOTE_CAP {
            buffer.dropped_notes += 1;
            return;
        }
        buffer.notes_used += message.len();
        buffer.lines.push(LogLine {
            level,
            source: Source::Host,
            message,
        });
    }

    /// Adds a host note past the notes' cap: for what the host says once, at
    /// the end of a call, which a flood of notes must not crowd out.
    pub(crate) fn closing_note(&self, level: Level, message: String) {
        self.lock().lines.push(LogLine {
            level,
            source: Source::Host,
            message,
        });
    }

    /// Ends the log: flushes unterminated output and notes what the cap dropped.
    pub(crate) fn finish(&self) -> Vec<LogLine> {
        let mut buffer = self.lock();
        for source in [Source::Stdout, Source::Stderr] {
            let rest = std::mem::take(buffer.partial(source));
            if !rest.is_empty() {
                buffer.push_output_line(source, &rest);
            }
        }
        let mut lines = std::mem::take(&mut buffer.lines);
        if buffer.dropped_lines > 0 || buffer.dropped_bytes > 0 {
            lines.push(LogLine {
                level: Level::Warn,
                source: Source::Host,
                message: format!(
                    "log truncated at the cap of {} bytes: {} bytes dropped ({} whole lines)",
                    buffer.cap, buffer.dropped_bytes, buffer.dropped_lines
                ),
            });
        }
        if buffer.dropped_notes > 0 {
            lines.push(LogLine {
                level: Level::Warn,
                source: Source::Host,
                message: format!(
                    "{} more host notes dropped past their cap of {NOTE_CAP} bytes",
                    buffer.dropped_notes
                ),
            });
        }
        lines
    }

    /// A stream for the guest's stdout or stderr that writes into this log.
    pub(crate) fn stream(&self, source: Source) -> OutputCapture {
        OutputCapture {
            sink: self.clone(),
            source,
        }
    }

    fn write_output(&self, source: Source, bytes: &[u8]) {
        self.lock().write_output(source, bytes);
    }
}

/// What each kept line counts against the log cap besides its text: its own
/// place in the host's memory. Without it an empty line would cost nothing,
/// and an action could make the host keep millions of them.
pub(crate) const LINE_OVERHEAD: usize = 32;

impl LogBuffer {
    fn push(&mut self, level: Level, source: Source, message: &str) {
        let cost = message.len() + LINE_OVERHEAD;
        if self.used + cost > self.cap {
            self.dropped_lines += 1;
            self.dropped_bytes += message.len();
            return;
        }
        self.used += cost;
        self.lines.push(LogLine {
            level,
            source,
            message: message.to_owned(),
        });
    }

    fn partial(&mut self, source: Source) -> &mut Vec<u8> {
        match source {
            Source::Stderr => &mut self.partial_stderr,
            _ => &mut self.partial_stdout,
        }
    }

    fn write_output(&mut self, source: Source, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(self.partial(source));
            line.extend_from_slice(&bytes[..end]);
            self.push_output_line(source, &line);
            bytes = &bytes[end + 1..];
        }
        // An unterminated line may not grow past what the cap could still keep,
        // so a guest that never writes a newline cannot make the host buffer
        // without bound.
        let room = self
            .cap
            .saturating_sub(self.used + LINE_OVERHEAD + self.partial(source).len());
        let kept = bytes.len().min(room);
        self.partial(source).extend_from_slice(&bytes[..kept]);
        self.dropped_bytes += bytes.len() - kept;
    }

    fn push_output_line(&mut self, source: Source, line: &[u8]) {
        let level = if source == Source::Stderr {
            Level::Error
        } else {
            Level::Info
        };
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        // Blank lines (a panic message starts with one) carry nothing to read.
        if !text.trim().is_empty() {
            self.push(level, source, text);
        }
    }
}

/// The guest's stdout or stderr, captured into the invocation's log.
pub(crate) struct OutputCapture {
    sink: LogSink,
    source: Source,
}

/// How much a guest may write in one call; the capture never refuses bytes, it
/// drops what goes past the cap.
const WRITE_BUDGET: usize = 64 * 1024;

impl IsTerminal for OutputCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputCapture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.sink.stream(self.source))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.sink.stream(self.source))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputCapture {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write_output(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl tokio::io::AsyncWrite for OutputCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.sink.write_output(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_split_into_lines_across_writes() {
        let sink = LogSink::new(1024);
        sink.write_output(Source::Stdout, b"hel");
        sink.write_output(Source::Stdout, b"lo\nworld\r\npart");
        let lines = sink.finish();
        let texts: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["hello", "world", "part"]);
        assert!(
            lines
                .iter()
                .all(|l| l.source == Source::Stdout && l.level == Level::Info)
        );
    }

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted() {
        let sink = LogSink::new(2 * (5 + LINE_OVERHEAD));
        sink.push(Level::Info, Source::Log, "12345");
        sink.push(Level::Info, Source::Log, "67890");
        sink.push(Level::Info, Source::Log, "dropped");
        let lines = sink.finish();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].source, Source::Host);
        assert!(
            lines[2].message.contains("7 bytes dropped (1 whole lines)"),
            "{}",
            lines[2].message
        );
    }

    #[test]
    fn empty_lines_count_against_the_cap_too() {
        let sink = LogSink::new(16 << 10);
        for _ in 0..1_000_000 {
            sink.push(Level::Info, Source::Log, "");
        }
        let lines = sink.finish();
        assert_eq!(lines.len(), (16 << 10) / LINE_OVERHEAD + 1);
        let note = &lines.last().unwrap().message;
        assert!(
            note.contains(&format!(
                "0 bytes dropped ({} whole lines)",
                1_000_000 - (16 << 10) / LINE_OVERHEAD
            )),
            "{note}"
        );
    }

    #[test]
    fn notes_past_their_cap_are_counted_not_kept() {
        let sink = LogSink::new(10);
        let note = "n".repeat(100);
        for _ in 0..100_000 {
            sink.note(Level::Warn, note.clone());
        }
        let lines = sink.finish();
        let kept: usize = lines.iter().map(|l| l.message.len()).sum();
        assert!(kept <= NOTE_CAP + 100, "{kept} bytes kept");
        let last = &lines.last().unwrap().message;
        assert!(
            last.contains(&format!(
                "{} more host notes dropped",
                100_000 - NOTE_CAP / 100
            )),
            "{last}"
        );
    }

    #[test]
    fn clip_cuts_long_text_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(ECHO_CAP);
        let clipped = clip(&long);
        assert!(clipped.len() < ECHO_CAP + 40, "{clipped}");
        assert!(clipped.ends_with(&format!("({} more bytes)", long.len() - ECHO_CAP)));
    }

    #[test]
    fn an_endless_line_without_newline_stays_within_the_cap() {
        let sink = LogSink::new(100 + LINE_OVERHEAD);
        for _ in 0..1000 {
            sink.write_output(Source::Stderr, &[b'x'; 1000]);
        }
        let lines = sink.finish();
        assert_eq!(lines[0].message.len(), 100);
        assert_eq!(lines[0].level, Level::Error);
        assert!(
            lines[1].message.contains("999900 bytes dropped"),
            "{}",
            lines[1].message
        );
    }
}
