//! A test action that tries to make the host hold memory through WASI, where
//! the host allocates on the guest's behalf. Each `behave` input is one try:
//!
//! - `fields`: creates `count` `wasi:http` fields resources, each holding a
//!   header of `size` bytes, and keeps them all. The host must stop it at its
//!   resource cap, with each fields resource under its size limit.
//! - `random`: asks `wasi:random` for `size` random bytes in one call.
//! - `bodies`: creates `count` outgoing `wasi:http` requests and writes up to
//!   `size` bytes into each one's body, as much as the host takes before
//!   anything is sent, keeping them all. The host must bound what it buffers.
//!
//! On success it returns `made` (how many resources it made), `bytes`, or
//! `buffered` (the body bytes the host took).

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::webhook::action::action::Guest;
use wasip2::http::types::{Fields, OutgoingRequest};
use webhook::action::types::{
    ActionError, Attribute, AttributeSpec, Context, Manifest, Outcome, Value, ValueKind,
};

struct Hog;

impl Guest for Hog {
    fn describe() -> Manifest {
        let spec = |name: &str, kind| AttributeSpec {
            name: name.into(),
            kind,
            required: name == "behave",
            description: String::new(),
        };
        Manifest {
            name: "wasi-hog".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Tries to make the host hold memory through WASI".into(),
            inputs: vec![
                spec("behave", ValueKind::Text),
                spec("count", ValueKind::Integer),
                spec("size", ValueKind::Integer),
            ],
            outputs: Vec::new(),
            hosts: Vec::new(),
            config: Vec::new(),
        }
    }

    fn run(_ctx: Context, input: Vec<Attribute>) -> Result<Outcome, ActionError> {
        let integer = |name: &str| {
            input
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| match a.value {
                    Value::Integer(n) => Some(n),
                    _ => None,
                })
                .unwrap_or(0)
        };
        let behave = input
            .iter()
            .find(|a| a.name == "behave")
            .and_then(|a| match &a.value {
                Value::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .unwrap_or_default();
        let attribute = match behave {
            "fields" => {
                let value = vec![b'v'; integer("size") as usize];
                let mut kept = Vec::new();
                for _ in 0..integer("count") {
                    let fields = Fields::new();
                    fields
                        .append("x-hog", &value)
                        .map_err(|e| ActionError::Internal(format!("append failed: {e:?}")))?;
                    kept.push(fields);
                }
                ("made", kept.len() as i64)
            }
            "random" => {
                let bytes = wasip2::random::random::get_random_bytes(integer("size") as u64);
                ("bytes", bytes.len() as i64)
            }
            "bodies" => {
                let failed = |what: &str| ActionError::Internal(format!("{what} failed"));
                let chunk = vec![b'b'; 1 << 20];
                let mut kept = Vec::new();
                let mut buffered = 0i64;
                for _ in 0..integer("count") {
                    let request = OutgoingRequest::new(Fields::new());
                    let body = request.body().map_err(|()| failed("body"))?;
                    let stream = body.write().map_err(|()| failed("write"))?;
                    let mut left = integer("size") as usize;
                    while left > 0 {
                        let room = stream.check_write().map_err(|_| failed("check-write"))?;
                        let n = (room as usize).min(left).min(chunk.len());
                        if n == 0 {
                            break;
                        }
                        stream.write(&chunk[..n]).map_err(|_| failed("write"))?;
                        buffered += n as i64;
                        left -= n;
                    }
                    kept.push((request, body, stream));
                }
                // Children before their parents.
                for (request, body, stream) in kept.into_iter().rev() {
                    drop(stream);
                    drop(body);
                    drop(request);
                }
                ("buffered", buffered)
            }
            other => {
                return Err(ActionError::InvalidInput(format!(
                    "unknown behave `{other}`"
                )));
            }
        };
        Ok(Outcome {
            success: true,
            attributes: vec![Attribute {
                name: attribute.0.into(),
                value: Value::Integer(attribute.1),
            }],
            messages: Vec::new(),
        })
    }
}

export!(Hog);
