//! What a call leaves for a record of it, and what a replay of that record
//! takes back: each outbound request with its answer, in order.
//!
//! A recording call keeps the requests the action made, refused or sent, as
//! the gate saw them: as many as its request budget allows and the first
//! refusal past it ([`Deck::new`]). A replayed call passes the gate as any
//! other (the grants are the current ones), but its admitted requests are
//! answered from the record, in order, instead of the network; the record's
//! requests that the gate refused are passed over, as the gate refuses them
//! again first. A request that is not the record's next one is denied with a
//! message saying so, because answering it with another request's response
//! would make the replay lie.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::outbound::{OutboundError, Response};

/// The most bytes of each request and response body a record keeps.
pub const BODY_CAP: usize = 64 << 10;

/// One outbound request and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The request's method.
    pub method: String,
    /// The request's URL, as the gate read it.
    pub url: String,
    /// The request's headers, a secret's value shown as `[redacted]`.
    pub request_headers: Vec<(String, String)>,
    /// The request's body.
    pub request_body: RecordedBody,
    /// The response, or why there was none.
    pub outcome: ExchangeOutcome,
    /// From the request leaving the gate to the response read whole, in
    /// milliseconds.
    pub duration_ms: f64,
}

/// What came of one outbound request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ExchangeOutcome {
    /// A response, read whole.
    Response {
        /// The HTTP status.
        status: u16,
        /// The response's headers, secrets redacted.
        headers: Vec<(String, String)>,
        /// The response's body, secrets redacted.
        body: RecordedBody,
    },
    /// No response: the gate refused the request or the network failed.
    Error {
        /// The `http-error` case: `denied`, `timeout`, `too-large`,
        /// `invalid-request`, `transport` or `budget-exhausted`.
        kind: String,
        /// What went wrong, when there is more to say than the kind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// A body as a record keeps it: text when it is UTF-8, else base64, cut at
/// 64 KiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedBody {
    /// The body as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// The body's whole length in bytes.
    pub bytes: usize,
    /// Whether the record keeps only the first 64 KiB.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl RecordedBody {
    /// `bytes` as a record keeps them.
    pub fn of(bytes: &[u8]) -> RecordedBody {
        let kept = &bytes[..bytes.len().min(BODY_CAP)];
        // A cut may split a character: keep the valid part as text.
        let (text, base64) = match std::str::from_utf8(kept) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(error) if kept.len() < bytes.len() && error.error_len().is_none() => {
                let valid = &kept[..error.valid_up_to()];
                (Some(String::from_utf8_lossy(valid).into_owned()), None)
            }
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(kept)),
            ),
        };
        RecordedBody {
            text,
            base64,
            bytes: bytes.len(),
            truncated: kept.len() < bytes.len(),
        }
    }

    /// The kept bytes.
    pub fn kept(&self) -> Vec<u8> {
        match (&self.text, &self.base64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// What a call does with its outbound requests besides sending them.
#[derive(Debug, Clone, Default)]
pub enum Tape {
    /// Sends them and keeps nothing: every call that is not recorded.
    #[default]
    Off,
    /// Sends them and keeps each exchange.
    Record,
    /// Answers them from these exchanges, in order, instead of sending them.
    Replay(Vec<Exchange>),
}

/// The error kind of an exchange whose answer never came: the call ended
/// (at its deadline, say) or the action stopped waiting while the request
/// was on its way. A replay leaves that request unanswered too.
pub(crate) const UNFINISHED: &str = "unfinished";

/// One call's tape, as the gate uses it.
#[derive(Default)]
pub(crate) struct Deck {
    recording: bool,
    /// Each request in the order the action made it, its answer filled in
    /// when it comes.
    kept: Mutex<Kept>,
    /// The most requests kept; past them the tape counts.
    keep: usize,
    script: Option<Mutex<VecDeque<Exchange>>>,
}

/// The requests a tape keeps, and how many more it did not.
#[derive(Default)]
struct Kept {
    slots: Vec<Slot>,
    dropped: usize,
}

/// A kept exchange, and since when it has waited for its answer if it has
/// not come yet.
struct Slot {
    exchange: Exchange,
    waiting_since: Option<Instant>,
}

/// What a replay does with a request.
pub(crate) enum Replayed {
    /// Answers it, as the record says.
    Answer(Result<Response, OutboundError>),
    /// Leaves it unanswered: the record's answer never came either.
    Unanswered,
}

impl Deck {
    /// A deck for `tape` that keeps at most `keep` requests. Every attempt,
    /// refused or not, spends the request budget, so past the budget an
    /// action gets only the same refusal: the caller passes the budget and
    /// one, and a loop of thousands of tries costs no more.
    pub(crate) fn new(tape: Tape, keep: usize) -> Deck {
        let (recording, script) = match tape {
            Tape::Off => (false, None),
            Tape::Record => (true, None),
            Tape::Replay(exchanges) => (true, Some(Mutex::new(exchanges.into()))),
        };
        Deck {
            recording,
            keep,
            kept: Mutex::default(),
            script,
        }
    }

    /// Whether exchanges are kept.
    pub(crate) fn recording(&self) -> bool {
        self.recording
    }

    /// Keeps a request the action has just made, with the outcome
    /// [`unfinished`] until [`Deck::close`] gives its end: a call cut off at its deadline still
    /// shows what it was waiting for. Returns its place; `None` when the
    /// tape keeps nothing, or no more (see [`Deck::new`]).
    pub(crate) fn open(&self, request: impl FnOnce() -> Exchange) -> Option<usize> {
        if !self.recording {
            return None;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.slots.len() >= self.keep {
            kept.dropped += 1;
            return None;
        }
        kept.slots.push(Slot {
            exchange: request(),
            waiting_since: Some(Instant::now()),
        });
        Some(kept.slots.len() - 1)
    }

    /// How many requests came after the tape was full.
    pub(crate) fn dropped(&self) -> usize {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }

    /// Gives the request kept at `place` its end.
    pub(crate) fn close(&self, place: usize, exchange: Exchange) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = kept.slots.get_mut(place) {
            *slot = Slot {
                exchange,
                waiting_since: None,
            };
        }
    }

    /// When replaying, the recorded answer to `method url`: the record's next
    /// exchange if it is that request, else a denial that says what the
    /// record has instead.
    pub(crate) fn replayed(&self, method: &str, url: &str) -> Option<Replayed> {
        let script = self.script.as_ref()?;
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        let is_this = |e: &Exchange| e.method.eq_ignore_ascii_case(method) && e.url == url;
        // Only admitted requests ask the record; what the gate refused when
        // the record was made it refuses again first, so those are passed
        // over: a refusal of another request, or of this one when the
        // record has it again later (the action retried it and got through).
        while script.front().is_some_and(|next| {
            refused_by_gate(next) && (!is_this(next) || script.iter().skip(1).any(is_this))
        }) {
            script.pop_front();
        }
        let Some(next) = script.front() else {
            return Some(Replayed::Answer(Err(OutboundError::Denied(format!(
                "replay: the record has no request {method} {} (it made no more requests)",
                crate::log::clip(url)
            )))));
        };
        if !is_this(next) {
            return Some(Replayed::Answer(Err(OutboundError::Denied(format!(
                "replay: the record has no request {method} {} here (its next was {} {})",
                crate::log::clip(url),
                next.method,
                crate::log::clip(&next.url)
            )))));
        }
        let next = script.pop_front()?;
        Some(match next.outcome {
            ExchangeOutcome::Response {
                status,
                headers,
                body,
            } => Replayed::Answer(Ok(Response {
                status,
                headers,
                body: body.kept().into(),
            })),
            ExchangeOutcome::Error { kind, .. } if kind == UNFINISHED => Replayed::Unanswered,
            ExchangeOutcome::Error { kind, message } => {
                Replayed::Answer(Err(error_of(&kind, message)))
            }
        })
    }

    /// The exchanges kept, in the order the action made the requests; one
    /// still waiting is [`UNFINISHED`], with how long it waited.
    pub(crate) fn take(&self) -> Vec<Exchange> {
        let kept = std::mem::take(&mut self.kept.lock().unwrap_or_else(|p| p.into_inner()).slots);
        kept.into_iter()
            .map(|slot| {
                let mut exchange = slot.exchange;
                if let Some(since) = slot.waiting_since {
                    exchange.duration_ms = millis(since.elapsed());
                }
                exchange
            })
            .collect()
    }
}

/// Whether the gate refused `exchange` before it was sent: its budget, its
/// well-formedness check or its grants (a denial at connect time, by the
/// resolver, is one too, and is answered when it is asked for).
fn refused_by_gate(exchange: &Exchange) -> bool {
    matches!(
        &exchange.outcome,
        ExchangeOutcome::Error { kind, .. }
            if ["denied", "invalid-request", "budget-exhausted"].contains(&kind.as_str())
    )
}

/// The outcome of a request whose answer has not come.
pub(crate) fn unfinished() -> ExchangeOutcome {
    ExchangeOutcome::Error {
        kind: UNFINISHED.into(),
        message: Some("the call ended before the answer came".into()),
    }
}

/// An error as a record names it.
pub(crate) fn outcome_of_error(error: &OutboundError) -> ExchangeOutcome {
    let (kind, message) = match error {
        OutboundError::Denied(why) => ("denied", Some(why.clone())),
        OutboundError::Timeout => ("timeout", None),
        OutboundError::TooLarge => ("too-large", None),
        OutboundError::InvalidRequest(why) => ("invalid-request", Some(why.clone())),
        OutboundError::Transport(why) => ("transport", Some(why.clone())),
        OutboundError::BudgetExhausted => ("budget-exhausted", None),
    };
    ExchangeOutcome::Error {
        kind: kind.to_owned(),
        message,
    }
}

/// The error a record names, for a replay to give back.
fn error_of(kind: &str, message: Option<String>) -> OutboundError {
    let message = message.unwrap_or_default();
    match kind {
        "timeout" => OutboundError::Timeout,
        "too-large" => OutboundError::TooLarge,
        "invalid-request" => OutboundError::InvalidRequest(message),
        "budget-exhausted" => OutboundError::BudgetExhausted,
        "denied" => OutboundError::Denied(message),
        _ => OutboundError::Transport(message),
    }
}

/// `result` as a record keeps it.
pub(crate) fn outcome_of(result: &Result<Response, OutboundError>) -> ExchangeOutcome {
    match result {
        Ok(response) => ExchangeOutcome::Response {
            status: response.status,
            headers: response.headers.clone(),
            body: RecordedBody::of(&response.body),
        },
        Err(error) => outcome_of_error(error),
    }
}

/// Milliseconds of `took`, as records write durations.
pub(crate) fn millis(took: Duration) -> f64 {
    took.as_nanos() as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_text_or_base64_and_cut_at_the_cap() {
        let text = RecordedBody::of(b"{\"ok\":true}");
        assert_eq!(text.text.as_deref(), Some("{\"ok\":true}"));
        assert_eq!((text.bytes, text.truncated), (11, false));
        let binary = RecordedBody::of(&[0xff, 0x00, 0x10]);
        assert_eq!(binary.text, None);
        assert_eq!(binary.kept(), vec![0xff, 0x00, 0x10]);
        let mut long = "é".repeat(BODY_CAP).into_bytes();
        long.push(b'!');
        let cut = RecordedBody::of(&long);
        assert!(cut.truncated);
        assert_eq!(cut.bytes, long.len());
        // Cut inside a character: the text keeps the whole characters before it.
        assert_eq!(cut.text.as_ref().unwrap().len(), BODY_CAP);
    }

    fn exchange(method: &str, url: &str, status: u16) -> Exchange {
        Exchange {
            method: method.into(),
            url: url.into(),
            request_headers: Vec::new(),
            request_body: RecordedBody::default(),
            outcome: ExchangeOutcome::Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: RecordedBody::of(b"{}"),
            },
            duration_ms: 1.0,
        }
    }

    #[test]
    fn a_replay_answers_in_order_and_denies_what_the_record_lacks() {
        let deck = Deck::new(
            Tape::Replay(vec![
                exchange("GET", "https://api.example.com/a", 200),
                exchange("POST", "https://api.example.com/b", 201),
            ]),
            64,
        );
        let first = answer(&deck, "GET", "https://api.example.com/a");
        assert_eq!(first.unwrap().status, 200);
        let Err(OutboundError::Denied(why)) = answer(&deck, "GET", "https://api.example.com/c")
        else {
            panic!("a request not in the record was answered");
        };
        assert!(
            why.contains("its next was POST https://api.example.com/b"),
            "{why}"
        );
        assert_eq!(
            answer(&deck, "post", "https://api.example.com/b")
                .unwrap()
                .status,
            201
        );
        let Err(OutboundError::Denied(why)) = answer(&deck, "GET", "https://api.example.com/a")
        else {
            panic!("a request past the record's end was answered");
        };
        assert!(why.contains("made no more requests"), "{why}");
    }

    #[test]
    fn a_replay_skips_what_the_gate_refused_when_the_record_was_made() {
        let refused = |url: &str, kind: &str| Exchange {
            outcome: ExchangeOutcome::Error {
                kind: kind.into(),
                message: None,
            },
            ..exchange("GET", url, 0)
        };
        // The gate refuses these again in the replay, before the record is
        // asked: the admitted request after them must still find its answer.
        let deck = Deck::new(
            Tape::Replay(vec![
                refused("https://other.example.com/", "denied"),
                refused("https://api.example.com/a", "invalid-request"),
                exchange("GET", "https://api.example.com/b", 200),
                refused("https://internal.example.com/", "denied"),
            ]),
            64,
        );
        assert_eq!(
            answer(&deck, "GET", "https://api.example.com/b")
                .unwrap()
                .status,
            200
        );
        // One the gate admits now but refused then (a resolver's denial, say)
        // gets the recorded refusal.
        let refusal = answer(&deck, "GET", "https://internal.example.com/");
        assert!(
            matches!(&refusal, Err(OutboundError::Denied(why)) if why.is_empty()),
            "the recorded refusal was not replayed: {:?}",
            refusal.err()
        );
        // A request refused and then retried gets the retry's answer.
        let retried = Deck::new(
            Tape::Replay(vec![
                refused("https://api.example.com/b", "invalid-request"),
                exchange("GET", "https://api.example.com/b", 200),
            ]),
            64,
        );
        assert_eq!(
            answer(&retried, "GET", "https://api.example.com/b")
                .unwrap()
                .status,
            200
        );
    }

    fn answer(deck: &Deck, method: &str, url: &str) -> Result<Response, OutboundError> {
        match deck.replayed(method, url) {
            Some(Replayed::Answer(answer)) => answer,
            Some(Replayed::Unanswered) => panic!("{method} {url} was left unanswered"),
            None => panic!("not a replay"),
        }
    }

    #[test]
    fn an_unrecorded_call_keeps_nothing() {
        let deck = Deck::new(Tape::Off, 64);
        assert!(deck.replayed("GET", "https://api.example.com/a").is_none());
        assert_eq!(
            deck.open(|| exchange("GET", "https://api.example.com/a", 200)),
            None
        );
        assert!(deck.take().is_empty());
    }

    #[test]
    fn a_request_without_an_answer_is_kept_unfinished_and_replayed_unanswered() {
        let deck = Deck::new(Tape::Record, 64);
        let waiting = |url: &str| Exchange {
            outcome: unfinished(),
            ..exchange("GET", url, 0)
        };
        let first = deck.open(|| waiting("https://api.example.com/slow"));
        let second = deck.open(|| waiting("https://api.example.com/fast"));
        deck.close(
            second.unwrap(),
            exchange("GET", "https://api.example.com/fast", 200),
        );
        let kept = deck.take();
        // In the order made, not the order answered.
        assert_eq!(kept[0].url, "https://api.example.com/slow");
        assert!(
            matches!(&kept[0].outcome, ExchangeOutcome::Error { kind, .. } if kind == UNFINISHED)
        );
        assert!(matches!(
            kept[1].outcome,
            ExchangeOutcome::Response { status: 200, .. }
        ));
        assert!(first.is_some());
        let replay = Deck::new(Tape::Replay(kept), 64);
        assert!(matches!(
            replay.replayed("GET", "https://api.example.com/slow"),
            Some(Replayed::Unanswered)
        ));
        assert_eq!(
            answer(&replay, "GET", "https://api.example.com/fast")
                .unwrap()
                .status,
            200
        );
    }
}
