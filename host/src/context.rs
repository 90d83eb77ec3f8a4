//! The invocation's context: what the caller says about the conversation, and
//! what the host fills in itself (time, local hour, part of day, deadline).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::bindings::types::{Context, PartOfDay};

/// What the caller knows about the conversation. In JSON the fields are
/// snake_case; every field is optional and unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallContext {
    /// The conversation this call belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The user in the conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The platform's scenario (flow) name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// The intent that triggered the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// The user's locale, as a BCP 47 tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The user's IANA time zone; UTC when absent or unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl CallContext {
    /// Reads a context from a JSON object, naming the field that is wrong.
    pub fn from_json(json: &serde_json::Value) -> Result<CallContext, String> {
        if !json.is_object() {
            return Err("the context must be a JSON object".into());
        }
        CallContext::deserialize(json).map_err(|e| format!("invalid context: {e}"))
    }
}

/// The local hour of `now_ms` in the zone called `timezone`, and whether that
/// zone was known. Unknown and absent zones are UTC.
pub(crate) fn local_hour(now_ms: i64, timezone: Option<&str>) -> (u8, bool) {
    let Ok(now) = Timestamp::from_millisecond(now_ms) else {
        return (0, false);
    };
    let zone = timezone.map(TimeZone::get);
    let known = matches!(zone, Some(Ok(_)));
    let zone = match zone {
        Some(Ok(zone)) => zone,
        _ => TimeZone::UTC,
    };
    // hour() is 0-23, so the cast cannot truncate.
    (now.to_zoned(zone).hour() as u8, known)
}

/// The part of the day of a local hour: morning 5-11, afternoon 12-16,
/// evening 17-21, night 22-4.
pub(crate) fn part_of_day(hour: u8) -> PartOfDay {
    match hour {
        5..=11 => PartOfDay::Morning,
        12..=16 => PartOfDay::Afternoon,
        17..=21 => PartOfDay::Evening,
        _ => PartOfDay::Night,
    }
}

/// Everything the host fills in for one invocation.
pub(crate) struct HostFacts<'a> {
    pub invocation_id: String,
    pub action: &'a str,
    pub now_ms: i64,
    pub deadline_ms: u32,
}

/// Builds the context passed to `run`. Returns the zone name the caller gave
/// when it is not a known IANA zone, so the host can note it in the log.
pub(crate) fn build(call: CallContext, facts: HostFacts<'_>) -> (Context, Option<String>) {
    let (hour, known) = local_hour(facts.now_ms, call.timezone.as_deref());
    let (timezone, unknown) = match call.timezone {
        Some(zone) if !known => (None, Some(zone)),
        zone => (zone, None),
    };
    let context = Context {
        invocation_id: facts.invocation_id,
        action: facts.action.to_owned(),
        conversation_id: call.conversation_id,
        user_id: call.user_id,
        scenario: call.scenario,
        intent: call.intent,
        locale: call.locale,
        timezone,
        now_ms: facts.now_ms,
        local_hour: hour,
        part_of_day: part_of_day(hour),
        deadline_ms: facts.deadline_ms,
    };
    (context, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-01-15T08:30:00Z: winter, so London is on UTC and New York is UTC-5.
    const WINTER_0830_UTC: i64 = 1_768_465_800_000;
    /// 2026-07-15T08:30:00Z: summer time in London (UTC+1).
    const SUMMER_0830_UTC: i64 = 1_784_104_200_000;

    #[test]
    fn the_local_hour_follows_the_zone_and_its_daylight_saving() {
        assert_eq!(
            local_hour(WINTER_0830_UTC, Some("Europe/London")),
            (8, true)
        );
        assert_eq!(
            local_hour(SUMMER_0830_UTC, Some("Europe/London")),
            (9, true)
        );
        assert_eq!(
            local_hour(WINTER_0830_UTC, Some("America/New_York")),
            (3, true)
        );
        assert_eq!(
            local_hour(WINTER_0830_UTC, Some("Asia/Kolkata")),
            (14, true)
        );
    }

    #[test]
    fn absent_and_unknown_zones_are_utc() {
        assert_eq!(local_hour(WINTER_0830_UTC, None), (8, false));
        assert_eq!(
            local_hour(WINTER_0830_UTC, Some("Mars/Olympus_Mons")),
            (8, false)
        );
    }

    #[test]
    fn parts_of_day_have_the_documented_boundaries() {
        let expect = |hours: std::ops::RangeInclusive<u8>, part: PartOfDay| {
            for hour in hours {
                assert_eq!(part_of_day(hour), part, "hour {hour}");
            }
        };
        expect(0..=4, PartOfDay::Night);
        expect(5..=11, PartOfDay::Morning);
        expect(12..=16, PartOfDay::Afternoon);
        expect(17..=21, PartOfDay::Evening);
        expect(22..=23, PartOfDay::Night);
    }

    #[test]
    fn the_built_context_drops_an_unknown_zone_and_reports_it() {
        let call = CallContext {
            timezone: Some("Nowhere/Land".into()),
            ..CallContext::default()
        };
        let facts = HostFacts {
            invocation_id: "id".into(),
            action: "a",
            now_ms: WINTER_0830_UTC,
            deadline_ms: 5000,
        };
        let (context, unknown) = build(call, facts);
        assert_eq!(context.timezone, None);
        assert_eq!(unknown.as_deref(), Some("Nowhere/Land"));
        assert_eq!(context.local_hour, 8);
        assert_eq!(context.part_of_day, PartOfDay::Morning);
        assert_eq!(context.deadline_ms, 5000);
    }

    #[test]
    fn the_context_json_is_read_by_field_name() {
        let call =
            CallContext::from_json(&json!({"user_id": "u1", "timezone": "Europe/Paris"})).unwrap();
        assert_eq!(call.user_id.as_deref(), Some("u1"));
        let err = CallContext::from_json(&json!({"user": "u1"})).unwrap_err();
        assert!(err.contains("unknown field `user`"), "{err}");
        let err = CallContext::from_json(&json!({"locale": 5})).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        assert_eq!(
            CallContext::from_json(&json!([])).unwrap_err(),
            "the context must be a JSON object"
        );
    }
}
