//! A test action whose `describe` acquires a stdout stream and keeps it for
//! `run`, as language runtimes cache their streams. Resource handles are
//! numbered per instance, so the host must not start calls from a snapshot
//! taken after this `describe`: the kept handle would dangle and `run` would
//! trap. `run` writes "held stream" through the stream and succeeds.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::webhook::action::action::Guest;
use std::cell::RefCell;
use wasip2::io::streams::OutputStream;
use webhook::action::types::{ActionError, Attribute, Context, Manifest, Outcome};

thread_local! {
    static STDOUT: RefCell<Option<OutputStream>> = const { RefCell::new(None) };
}

struct HeldStream;

impl Guest for HeldStream {
    fn describe() -> Manifest {
        STDOUT.with(|out| *out.borrow_mut() = Some(wasip2::cli::stdout::get_stdout()));
        Manifest {
            name: "held-stream".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Writes through a stream its describe kept".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            hosts: Vec::new(),
            config: Vec::new(),
        }
    }

    fn run(_ctx: Context, _input: Vec<Attribute>) -> Result<Outcome, ActionError> {
        STDOUT.with(|out| {
            let mut out = out.borrow_mut();
            let stream = out.get_or_insert_with(wasip2::cli::stdout::get_stdout);
            stream
                .blocking_write_and_flush(b"held stream\n")
                .map_err(|e| ActionError::Internal(format!("writing failed: {e:?}")))
        })?;
        Ok(Outcome {
            success: true,
            attributes: Vec::new(),
            messages: Vec::new(),
        })
    }
}

export!(HeldStream);
