//! Secrets an upstream repeats: before an action sees a response, each of
//! its secrets' values is replaced with `[redacted]` wherever it appears, in
//! every form a response commonly carries it.

use crate::settings::Secret;

/// What a redacted secret reads as.
pub(crate) const REDACTED: &[u8] = b"[redacted]";

/// Every form in which a response may repeat a secret's value: as sent, and
/// as a JSON string carries it (an upstream that echoes headers as JSON).
/// Longest first, so that a longer form is replaced whole.
pub(crate) fn redactions(secrets: &[Secret]) -> Vec<Vec<u8>> {
    let mut forms: Vec<Vec<u8>> = Vec::new();
    for secret in secrets {
        let raw = secret.value.as_bytes().to_vec();
        let quoted = serde_json::to_string(&secret.value).unwrap_or_default();
        let json = quoted.as_bytes()[1..quoted.len().saturating_sub(1).max(1)].to_vec();
        let json_slashes = String::from_utf8_lossy(&json)
            .replace('/', "\\/")
            .into_bytes();
        for form in [raw, json, json_slashes] {
            if !form.is_empty() && !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms
}

/// `bytes` with every occurrence of each of `forms` replaced by [`REDACTED`];
/// `None` when there is none.
pub(crate) fn redacted(bytes: &[u8], forms: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut text = std::borrow::Cow::Borrowed(bytes);
    for form in forms {
        if memchr::memmem::find(&text, form).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut rest: &[u8] = &text;
        while let Some(at) = memchr::memmem::find(rest, form) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED);
            rest = &rest[at + form.len()..];
        }
        out.extend_from_slice(rest);
        text = std::borrow::Cow::Owned(out);
    }
    match text {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(out) => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Grant;

    fn secret(name: &str, value: &str, grant: &str) -> Secret {
        Secret::new(name, value, vec![Grant::parse(grant).unwrap()])
    }

    #[test]
    fn a_secret_is_redacted_in_every_form_a_response_repeats_it() {
        let secrets = [secret(
            "t",
            "tok/en\"with\\specials-123",
            "https://a.example/",
        )];
        let forms = redactions(&secrets);
        for echo in [
            "raw: tok/en\"with\\specials-123.".to_string(),
            format!(
                "json: {{\"authorization\": {}}}",
                serde_json::to_string("tok/en\"with\\specials-123").unwrap()
            ),
            "json with slashes: tok\\/en\\\"with\\\\specials-123".to_string(),
        ] {
            let clean = redacted(echo.as_bytes(), &forms).expect(&echo);
            let clean = String::from_utf8(clean).unwrap();
            assert!(
                clean.contains("[redacted]") && !clean.contains("specials"),
                "{clean}"
            );
        }
        assert!(redacted(b"nothing to hide", &forms).is_none());
    }
}
