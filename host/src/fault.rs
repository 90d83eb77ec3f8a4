//! The cause of a failed invocation in one line, read from what the guest's
//! language runtime wrote to stderr as it failed: a Rust panic, a Python
//! exception, or a JavaScript value thrown out of `run`. The trap alone says
//! only "unreachable executed"; the designer needs the runtime's own words.

use crate::log::{LogLine, Source};

/// The cause, such as "the action panicked: index out of bounds", if stderr
/// holds one in a form this module knows.
pub(crate) fn cause(logs: &[LogLine]) -> Option<String> {
    let stderr: Vec<&str> = logs
        .iter()
        .filter(|line| line.source == Source::Stderr)
        .map(|line| line.message.as_str())
        .collect();
    // Python prints its traceback before the runtime's panic about it, so the
    // exception comes first: it is the more precise of the two.
    python_exception(&stderr)
        .map(|e| format!("the action raised {e}"))
        .or_else(|| thrown_javascript(&stderr).map(|e| format!("the action threw {e}")))
        .or_else(|| rust_panic(&stderr).map(|p| format!("the action panicked: {p}")))
}

/// "Traceback (most recent call last):", indented frames, then the exception
/// as the first line that is not indented.
fn python_exception<'a>(stderr: &[&'a str]) -> Option<&'a str> {
    let start = stderr
        .iter()
        .rposition(|line| line.starts_with("Traceback (most recent call last):"))?;
    stderr[start + 1..]
        .iter()
        .find(|line| !line.starts_with(char::is_whitespace))
        .copied()
}

/// componentize-js reports a value thrown out of a function returning
/// `result` that is not a variant of the error type as
/// "invalid variant tag value `undefined` (received `TypeError: ...`) ...".
fn thrown_javascript<'a>(stderr: &[&'a str]) -> Option<&'a str> {
    stderr.iter().find_map(|line| {
        let (_, rest) = line.split_once("(received `")?;
        let end = rest.rfind("`)")?;
        Some(&rest[..end])
    })
}

/// The standard library's "thread '...' panicked at src/lib.rs:1:2:",
/// followed by the message line.
fn rust_panic<'a>(stderr: &[&'a str]) -> Option<&'a str> {
    let at = stderr
        .iter()
        .position(|line| line.contains(" panicked at "))?;
    stderr.get(at + 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Level;

    fn stderr(lines: &[&str]) -> Vec<LogLine> {
        lines
            .iter()
            .map(|line| LogLine {
                level: Level::Error,
                source: Source::Stderr,
                message: (*line).to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_rust_panic_gives_its_message() {
        let logs = stderr(&[
            "thread '<unnamed>' panicked at src/lib.rs:10:5:",
            "index out of bounds: the len is 0 but the index is 3",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        ]);
        assert_eq!(
            cause(&logs).as_deref(),
            Some("the action panicked: index out of bounds: the len is 0 but the index is 3")
        );
    }

    #[test]
    fn a_python_exception_wins_over_the_runtime_panic_it_causes() {
        let logs = stderr(&[
            "Traceback (most recent call last):",
            "  File \"/0/app.py\", line 84, in run",
            "  File \"/python/json/decoder.py\", line 363, in raw_decode",
            "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
            "thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:",
            "Python function threw an unexpected exception",
        ]);
        assert_eq!(
            cause(&logs).as_deref(),
            Some(
                "the action raised json.decoder.JSONDecodeError: \
                 Expecting value: line 1 column 1 (char 0)"
            )
        );
    }

    #[test]
    fn a_value_thrown_from_javascript_is_named() {
        let logs = stderr(&[
            "invalid variant tag value `undefined` (received `SyntaxError: JSON.parse: \
             unexpected character`) specified for `ActionError`",
            "Stack:",
            "  export_action_0_1_0$run@initializer.js:954:17",
        ]);
        assert_eq!(
            cause(&logs).as_deref(),
            Some("the action threw SyntaxError: JSON.parse: unexpected character")
        );
    }

    #[test]
    fn other_output_gives_no_cause() {
        assert_eq!(cause(&stderr(&["just a line", "and another"])), None);
        assert_eq!(cause(&[]), None);
    }
}
