//! The subcommands of `action-host`, one module each, and what they share.

pub(crate) mod client;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod serve;

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;

pub(crate) fn read_roots(file: Option<&Path>) -> Result<Option<String>> {
    file.map(|file| {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    })
    .transpose()
}

pub(crate) fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

pub(crate) fn parse_json(flag: &str, text: &str) -> Result<Json> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

pub(crate) fn json_object(flag: &str, text: &str) -> Result<Map<String, Json>> {
    match parse_json(flag, text)? {
        Json::Object(object) => Ok(object),
        _ => bail!(
            "{flag} must be a JSON object of attributes, for example '{{\"first_name\": \"Ada\"}}'"
        ),
    }
}

pub(crate) fn key_values(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => bail!("--config expects KEY=VALUE, got `{pair}`"),
        })
        .collect()
}
