//! The host library end to end: real components built from source, no network.

use crate::common;

use action_host::{
    ActionSettings, CallContext, ErrorKind, Host, HostConfig, Limits, LoadError, Source, StartsFrom,
};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("a JSON object").clone()
}

async fn host_with(name: &str, plugin: &str, limits: Option<Limits>) -> Host {
    let host = Host::new(HostConfig {
        pool_size: 32,
        ..HostConfig::default()
    })
    .unwrap();
    host.load_with(
        name,
        common::plugin_bytes(plugin),
        ActionSettings {
            limits,
            ..ActionSettings::default()
        },
    )
    .await
    .unwrap();
    host
}

async fn fixture(
    behave: &str,
    host: &Host,
) -> Result<action_host::Invocation, action_host::InvokeError> {
    host.invoke(
        "fixture",
        CallContext::default(),
        &object(json!({ "behave": behave })),
    )
    .await
}

fn short_limits() -> Limits {
    Limits {
        deadline: Duration::from_millis(300),
        ..Limits::default()
    }
}

#[tokio::test]
async fn greeting_greets_by_first_name_and_mentions_membership() {
    let host = host_with("greeting", "greeting", None).await;
    let input =
        object(json!({"first_name": "Ada Lovelace", "is_member": true, "membership_tier": "gold"}));
    let done = host
        .invoke("greeting", CallContext::default(), &input)
        .await
        .unwrap();
    assert!(done.success);
    let greeting = done.attributes["greeting"].as_str().unwrap();
    assert!(greeting.contains(", Ada!"), "{greeting}");
    assert!(!greeting.contains("Lovelace"), "{greeting}");
    assert!(
        greeting.ends_with("Thanks for being a gold member."),
        "{greeting}"
    );
    assert_eq!(done.messages, [greeting]);
    let part = done.attributes["part_of_day"].as_str().unwrap();
    assert!(["morning", "afternoon", "evening", "night"].contains(&part));
}

#[tokio::test]
async fn greeting_without_membership_says_nothing_of_it() {
    let host = host_with("greeting", "greeting", None).await;
    let done = host
        .invoke(
            "greeting",
            CallContext::default(),
            &object(json!({"first_name": "Grace"})),
        )
        .await
        .unwrap();
    let greeting = done.attributes["greeting"].as_str().unwrap();
    assert!(greeting.ends_with(", Grace!"), "{greeting}");
}

#[tokio::test]
async fn the_part_of_day_follows_the_users_time_zone() {
    let host = host_with("fixture", "fixture", None).await;
    for zone in ["Asia/Tokyo", "America/Los_Angeles", "Europe/London"] {
        let before = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
            .hour();
        let context = CallContext {
            timezone: Some(zone.into()),
            ..CallContext::default()
        };
        let done = host
            .invoke("fixture", context, &object(json!({"behave": "context"})))
            .await
            .unwrap();
        let after = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
            .hour();
        let hour = done.attributes["local_hour"].as_i64().unwrap();
        assert!(
            hour == i64::from(before) || hour == i64::from(after),
            "{zone}: {hour}"
        );
        let expected = match hour {
            5..=11 => "morning",
            12..=16 => "afternoon",
            17..=21 => "evening",
            _ => "night",
        };
        assert_eq!(done.attributes["part_of_day"], expected);
        assert_eq!(done.attributes["timezone"], zone);
    }
}

#[tokio::test]
async fn the_host_fills_in_the_context() {
    let host = host_with("fixture", "fixture", Some(short_limits())).await;
    let call = CallContext::from_json(&json!({
        "user_id": "u-1", "conversation_id": "c-9", "scenario": "welcome", "intent": "hello", "locale": "en-GB"
    }))
    .unwrap();
    let first = host
        .invoke(
            "fixture",
            call.clone(),
            &object(json!({"behave": "context"})),
        )
        .await
        .unwrap();
    let second = host
        .invoke("fixture", call, &object(json!({"behave": "context"})))
        .await
        .unwrap();
    let a = &first.attributes;
    assert_eq!(a["action"], "fixture");
    assert_eq!(a["user_id"], "u-1");
    assert_eq!(a["conversation_id"], "c-9");
    assert_eq!(a["scenario"], "welcome");
    assert_eq!(a["intent"], "hello");
    assert_eq!(a["locale"], "en-GB");
    assert_eq!(a["timezone"], Value::Null);
    assert_eq!(a["deadline_ms"], 300);
    assert!(!a["invocation_id"].as_str().unwrap().is_empty());
    assert_ne!(a["invocation_id"], second.attributes["invocation_id"]);
    // now_ms comes back as a timestamp, written as RFC 3339.
    let now: jiff::Timestamp = a["now_ms"].as_str().unwrap().parse().unwrap();
    assert!((jiff::Timestamp::now() - now).get_seconds().abs() < 60);
}

#[tokio::test]
async fn an_unknown_time_zone_is_utc_with_a_note_in_the_log() {
    let host = host_with("fixture", "fixture", None).await;
    let context = CallContext {
        timezone: Some("Mars/Olympus_Mons".into()),
        ..CallContext::default()
    };
    let done = host
        .invoke("fixture", context, &object(json!({"behave": "context"})))
        .await
        .unwrap();
    assert_eq!(done.attributes["timezone"], Value::Null);
    assert_eq!(
        done.attributes["local_hour"],
        i64::from(
            jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .hour()
        )
    );
    assert!(
        done.logs
            .iter()
            .any(|l| l.source == Source::Host && l.message.contains("Mars/Olympus_Mons"))
    );
}

#[tokio::test]
async fn values_convert_to_the_declared_kinds_and_back() {
    let host = host_with("fixture", "fixture", None).await;
    let input = object(json!({
        "behave": "echo", "count": "42", "ratio": 1, "flag": "true",
        "when": "2026-11-26T10:00:00+01:00", "data": {"items": [1, 2]}, "label": 7, "extra": [true]
    }));
    let done = host
        .invoke("fixture", CallContext::default(), &input)
        .await
        .unwrap();
    let expected = json!({
        "behave": "echo", "count": 42, "ratio": 1.0, "flag": true,
        "when": "2026-11-26T09:00:00Z", "data": {"items": [1, 2]}, "label": "7", "extra": [true]
    });
    assert_eq!(Value::Object(done.attributes), expected);
}

#[tokio::test]
async fn bad_input_is_refused_before_the_action_runs_naming_the_attribute() {
    let host = host_with("greeting", "greeting", None).await;
    let missing = host
        .invoke("greeting", CallContext::default(), &object(json!({})))
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::InvalidInput);
    assert_eq!(
        missing.message,
        "the required input `first_name` is missing"
    );
    let wrong = host
        .invoke(
            "greeting",
            CallContext::default(),
            &object(json!({"first_name": "Ada", "is_member": "maybe"})),
        )
        .await
        .unwrap_err();
    assert_eq!(wrong.kind, ErrorKind::InvalidInput);
    assert!(
        wrong
            .message
            .starts_with("input `is_member`: expected a boolean"),
        "{}",
        wrong.message
    );
}

#[tokio::test]
async fn errors_the_action_returns_keep_their_kind() {
    let host = host_with("greeting", "greeting", None).await;
    let blank = host
        .invoke(
            "greeting",
            CallContext::default(),
            &object(json!({"first_name": "  "})),
        )
        .await
        .unwrap_err();
    assert_eq!(blank.kind, ErrorKind::InvalidInput);
    assert_eq!(blank.message, "first_name is empty");

    let host = host_with("fixture", "fixture", None).await;
    let rejected = fixture("reject", &host).await.unwrap_err();
    assert_eq!(rejected.kind, ErrorKind::InvalidInput);
    assert_eq!(rejected.message, "label must not be empty");
}

#[tokio::test]
async fn a_business_failure_is_an_outcome_not_an_error() {
    let host = host_with("fixture", "fixture", None).await;
    let done = fixture("fail", &host).await.unwrap();
    assert!(!done.success);
    assert_eq!(done.messages, ["no previous order"]);
}

#[tokio::test]
async fn an_unknown_action_is_named() {
    let host = Host::new(HostConfig::default()).unwrap();
    let err = host
        .invoke("nope", CallContext::default(), &Map::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownAction);
    assert!(err.message.contains("`nope`"));
}

#[tokio::test]
async fn an_endless_loop_times_out_within_the_deadline_and_the_host_serves_on() {
    let host = host_with("fixture", "fixture", Some(short_limits())).await;
    // A busy machine only makes a call later: the least of three runs is
    // how late the deadline stops the loop.
    let mut least = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let err = fixture("loop", &host).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(err.message.contains("300 ms"), "{}", err.message);
        assert!(took >= Duration::from_millis(300), "{took:?}");
        least = least.min(took);
    }
    assert!(
        least <= Duration::from_millis(450),
        "the loop ran {least:?} past a 300 ms deadline"
    );
    assert!(fixture("echo", &host).await.unwrap().success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_are_served_while_a_loop_runs() {
    let host = host_with(
        "fixture",
        "fixture",
        Some(Limits {
            deadline: Duration::from_secs(2),
            ..Limits::default()
        }),
    )
    .await;
    let looping = {
        let host = host.clone();
        tokio::spawn(async move { fixture("loop", &host).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..50 {
        assert!(fixture("echo", &host).await.unwrap().success);
    }
    assert!(!looping.is_finished(), "the loop should still be running");
    assert_eq!(looping.await.unwrap().unwrap_err().kind, ErrorKind::Timeout);
}

#[tokio::test(flavor = "current_thread")]
async fn a_loop_yields_even_on_a_single_threaded_executor() {
    let host = host_with(
        "fixture",
        "fixture",
        Some(Limits {
            deadline: Duration::from_secs(1),
            ..Limits::default()
        }),
    )
    .await;
    let looping = tokio::spawn({
        let host = host.clone();
        async move { fixture("loop", &host).await }
    });
    tokio::task::yield_now().await;
    let echoed = fixture("echo", &host).await.unwrap();
    assert!(echoed.success);
    assert!(!looping.is_finished());
    assert_eq!(looping.await.unwrap().unwrap_err().kind, ErrorKind::Timeout);
}

#[tokio::test]
async fn growing_memory_past_the_limit_is_an_error_and_the_next_call_succeeds() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let host = host_with("fixture", "fixture", Some(limits)).await;
    let err = fixture("grow-memory", &host).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert_eq!(
        err.message.split(" (").next().unwrap(),
        "the action exceeded its memory limit of 16 MiB"
    );
    assert!(fixture("echo", &host).await.unwrap().success);
}

#[tokio::test]
async fn a_panic_is_an_internal_error_carrying_the_trap_and_panic_messages() {
    let host = host_with("fixture", "fixture", None).await;
    let err = fixture("panic", &host).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("unreachable"), "{}", err.message);
    assert!(
        err.message.contains("the fixture panicked on purpose"),
        "{}",
        err.message
    );
    assert!(
        err.logs
            .iter()
            .any(|l| l.source == Source::Stderr && l.message.contains("panicked at"))
    );
    assert!(fixture("echo", &host).await.unwrap().success);
}

#[tokio::test]
async fn a_stack_overflow_is_an_internal_error_and_the_host_carries_on() {
    let host = host_with("fixture", "fixture", None).await;
    let shallow = object(json!({ "behave": "recurse", "count": 16 }));
    let deep = object(json!({ "behave": "recurse", "count": 10_000 }));
    // The plugins link with a 64 KiB stack: 16 levels of 1 KiB fit,
    let done = host.invoke("fixture", CallContext::default(), &shallow);
    let done = done.await.unwrap();
    assert_eq!(done.attributes["depth"], json!(16));
    // 10,000 do not: the guest traps instead of writing past its stack.
    let err = host.invoke("fixture", CallContext::default(), &deep);
    let err = err.await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{}", err.message);
    assert!(err.message.contains("trap"), "{}", err.message);
    assert!(fixture("echo", &host).await.unwrap().success);
}

#[tokio::test]
async fn a_log_flood_is_capped_and_the_call_still_succeeds() {
    let limits = Limits {
        log_bytes: 4096,
        ..Limits::default()
    };
    let host = host_with("fixture", "fixture", Some(limits)).await;
    let done = fixture("log-flood", &host).await.unwrap();
    assert!(done.success);
    let kept: usize = done
        .logs
        .iter()
        .filter(|l| l.source != Source::Host)
        .map(|l| l.message.len())
        .sum();
    assert!(kept <= 4096, "{kept} bytes kept");
    assert!(done.logs.iter().any(|l| l.source == Source::Log));
    assert!(done.logs.iter().any(|l| l.source == Source::Stdout));
    let note = done.logs.last().unwrap();
    assert_eq!(note.source, Source::Host);
    assert!(
        note.message
            .starts_with("log truncated at the cap of 4096 bytes"),
        "{}",
        note.message
    );
}

#[tokio::test]
async fn outbound_http_is_denied_as_a_value_the_action_sees() {
    let host = host_with("fixture", "fixture", None).await;
    let input = object(json!({"behave": "http", "url": "https://api.example.com/orders"}));
    let done = host
        .invoke("fixture", CallContext::default(), &input)
        .await
        .unwrap();
    assert_eq!(done.attributes["error"], "denied");
    assert!(
        done.attributes["detail"]
            .as_str()
            .unwrap()
            .contains("https://api.example.com/orders")
    );
}

#[tokio::test]
async fn config_reads_the_operators_settings() {
    let host = Host::new(HostConfig::default()).unwrap();
    let settings = ActionSettings {
        config: [("greeting_prefix".to_string(), "Howdy".to_string())].into(),
        ..ActionSettings::default()
    };
    host.load_with("fixture", common::plugin_bytes("fixture"), settings)
        .await
        .unwrap();
    let read = |key: &str| object(json!({"behave": "config", "key": key}));
    let set = host
        .invoke("fixture", CallContext::default(), &read("greeting_prefix"))
        .await
        .unwrap();
    assert_eq!(set.attributes["value"], "Howdy");
    let unset = host
        .invoke("fixture", CallContext::default(), &read("other"))
        .await
        .unwrap();
    assert_eq!(unset.attributes["value"], Value::Null);
}

#[tokio::test]
async fn the_manifest_is_read_once_at_load() {
    let host = Host::new(HostConfig::default()).unwrap();
    let manifest = host
        .load("hello", common::plugin_bytes("greeting"))
        .await
        .unwrap();
    assert_eq!(manifest.name, "greeting");
    assert!(manifest.input("first_name").unwrap().required);
    assert_eq!(host.manifest("hello").unwrap().outputs.len(), 2);
    assert_eq!(host.actions(), ["hello"]);
    assert!(host.unload("hello"));
    assert!(host.manifest("hello").is_none());
}

async fn load_error(bytes: &[u8]) -> String {
    let host = Host::new(HostConfig::default()).unwrap();
    let err: LoadError = host.load("bad", bytes).await.unwrap_err();
    err.to_string()
}

#[tokio::test]
async fn garbage_is_not_a_component() {
    let err = load_error(b"this is not wasm").await;
    assert!(err.starts_with("not a WebAssembly component"), "{err}");
}

#[tokio::test]
async fn a_core_module_is_refused_as_such() {
    let err = load_error(&wat::parse_str("(module)").unwrap()).await;
    assert!(err.contains("core WebAssembly module"), "{err}");
}

#[tokio::test]
async fn a_truncated_component_is_refused() {
    let bytes = common::plugin_bytes("greeting");
    let err = load_error(&bytes[..bytes.len() / 2]).await;
    assert!(err.starts_with("not a WebAssembly component"), "{err}");
}

#[tokio::test]
async fn a_component_without_the_action_export_is_refused_naming_it() {
    let err = load_error(&wat::parse_str("(component)").unwrap()).await;
    assert!(
        err.contains("does not export `webhook:action/action@0.1.0`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_importing_what_the_host_lacks_is_refused_naming_it() {
    let wat = r#"(component (import "acme:vault/keys@1.0.0" (instance (export "get" (func)))))"#;
    let err = load_error(&wat::parse_str(wat).unwrap()).await;
    assert!(
        err.contains("imports something the host does not provide"),
        "{err}"
    );
    assert!(err.contains("acme:vault/keys@1.0.0"), "{err}");
}

#[tokio::test]
async fn a_component_with_the_wrong_action_shape_is_refused() {
    let wat =
        r#"(component (instance $empty) (export "webhook:action/action@0.1.0" (instance $empty)))"#;
    let err = load_error(&wat::parse_str(wat).unwrap()).await;
    assert!(err.contains("does not match the contract"), "{err}");
}

#[tokio::test]
async fn a_bad_action_name_or_memory_limit_is_refused() {
    let host = Host::new(HostConfig::default()).unwrap();
    let err = host
        .load("Bad Name", common::plugin_bytes("greeting"))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::InvalidName(_)), "{err}");
    let huge = ActionSettings {
        limits: Some(Limits {
            memory_bytes: 4 << 30,
            ..Limits::default()
        }),
        ..ActionSettings::default()
    };
    let err = host
        .load_with("ok", common::plugin_bytes("greeting"), huge)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("above this host's maximum"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_load_keeps_the_serving_version() {
    let host = host_with("greeting", "greeting", None).await;
    assert!(host.load("greeting", b"garbage").await.is_err());
    let done = host
        .invoke(
            "greeting",
            CallContext::default(),
            &object(json!({"first_name": "Ada"})),
        )
        .await
        .unwrap();
    assert!(done.success);
    // A good load replaces it.
    host.load("greeting", common::plugin_bytes("fixture"))
        .await
        .unwrap();
    assert_eq!(host.manifest("greeting").unwrap().name, "fixture");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_each_get_a_fresh_instance() {
    let host = host_with("greeting", "greeting", None).await;
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                let input = object(json!({"first_name": format!("User{i}")}));
                host.invoke("greeting", CallContext::default(), &input)
                    .await
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let done = call.await.unwrap().unwrap();
        assert!(
            done.attributes["greeting"]
                .as_str()
                .unwrap()
                .contains(&format!("User{i}!"))
        );
    }
}

#[tokio::test]
async fn a_cached_artifact_loads_without_compiling_again() {
    let dir = tempfile::tempdir().unwrap();
    let key = action_host_server::DataDir::kept_key(dir.path()).unwrap();
    let data = action_host_server::DataDir::open(dir.path(), &key).unwrap();
    let key = key.artifact_key();
    let cache: std::sync::Arc<dyn action_host::ArtifactCache> = std::sync::Arc::new(data);
    let bytes = common::plugin_bytes("greeting");
    let host_with_key = |key: &action_host::ArtifactKey| {
        Host::new(HostConfig {
            artifact_key: key.clone(),
            ..HostConfig::default()
        })
        .unwrap()
    };

    let first = host_with_key(&key);
    first
        .load_cached("greeting", &bytes, ActionSettings::default(), cache.clone())
        .await
        .unwrap();
    assert_eq!(first.compilations(), 1);

    // A new host (as after a restart) with the same key reads the artifact
    // instead of compiling.
    let second = host_with_key(&key);
    second
        .load_cached("greeting", &bytes, ActionSettings::default(), cache.clone())
        .await
        .unwrap();
    assert_eq!((second.compilations(), second.rejected_artifacts()), (0, 0));
    let done = second
        .invoke(
            "greeting",
            CallContext::default(),
            &object(json!({"first_name": "Ada"})),
        )
        .await;
    assert!(done.unwrap().success);

    // One with another key does not trust it: whoever wrote the cache might
    // not be this host.
    let stranger = host_with_key(&action_host::ArtifactKey::random());
    stranger
        .load_cached("greeting", &bytes, ActionSettings::default(), cache.clone())
        .await
        .unwrap();
    assert_eq!(
        (stranger.compilations(), stranger.rejected_artifacts()),
        (1, 1)
    );

    // The stranger's artifact is now in the cache, sealed with its key; and a
    // changed byte in an artifact, or garbage, is refused the same way.
    let third = host_with_key(&key);
    third
        .load_cached("greeting", &bytes, ActionSettings::default(), cache.clone())
        .await
        .unwrap();
    assert_eq!((third.compilations(), third.rejected_artifacts()), (1, 1));
    for change in [
        |artifact: &mut Vec<u8>| {
            let middle = artifact.len() / 2;
            artifact[middle] ^= 0x40;
        },
        |artifact: &mut Vec<u8>| *artifact = b"garbage".to_vec(),
    ] {
        for entry in std::fs::read_dir(dir.path().join("artifacts")).unwrap() {
            let path = entry.unwrap().path();
            let mut artifact = std::fs::read(&path).unwrap();
            change(&mut artifact);
            std::fs::write(&path, artifact).unwrap();
        }
        let next = host_with_key(&key);
        next.load_cached("greeting", &bytes, ActionSettings::default(), cache.clone())
            .await
            .unwrap();
        assert_eq!((next.compilations(), next.rejected_artifacts()), (1, 1));
        assert!(
            next.invoke(
                "greeting",
                CallContext::default(),
                &object(json!({"first_name": "Ada"}))
            )
            .await
            .unwrap()
            .success
        );
    }
}

#[tokio::test]
async fn calls_start_from_the_state_describe_left_and_nothing_carries_over() {
    let (host, prepared) = common::prepared_fixture(8).await;
    assert_eq!(prepared.starts_from(), &StartsFrom::Describe);
    host.install(prepared);
    let done = fixture("described", &host).await.unwrap();
    assert_eq!(done.attributes["described"], true);
    for _ in 0..3 {
        let done = fixture("count-calls", &host).await.unwrap();
        assert_eq!(
            done.attributes["calls"], 1,
            "state carried over between calls"
        );
    }
}

#[tokio::test]
async fn with_snapshots_off_calls_start_from_the_component_as_built() {
    let host = Host::new(HostConfig {
        pool_size: 8,
        snapshot_after_describe: false,
        ..HostConfig::default()
    })
    .unwrap();
    host.load("fixture", common::plugin_bytes("fixture"))
        .await
        .unwrap();
    let done = fixture("described", &host).await.unwrap();
    assert_eq!(done.attributes["described"], false);
}

/// A snapshot that failed because every instance slot was taken by other
/// calls is tried again at the next load, not remembered in the cache as
/// the component's for good.
#[tokio::test]
async fn a_snapshot_missed_for_a_full_pool_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let key = action_host_server::DataDir::kept_key(dir.path()).unwrap();
    let cache = Arc::new(action_host_server::DataDir::open(dir.path(), &key).unwrap());
    let host = Host::new(HostConfig {
        pool_size: 1,
        artifact_key: key.artifact_key(),
        ..HostConfig::default()
    })
    .unwrap();
    let settings = ActionSettings {
        limits: Some(Limits {
            deadline: Duration::from_millis(1500),
            ..Limits::default()
        }),
        ..ActionSettings::default()
    };
    host.load_with("fixture", common::plugin_bytes("fixture"), settings)
        .await
        .unwrap();
    let looping = {
        let host = host.clone();
        tokio::spawn(async move { fixture("loop", &host).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let greeting = common::plugin_bytes("greeting");
    let prepare = || {
        host.prepare(
            "greeting",
            &greeting,
            ActionSettings::default(),
            Some(cache.clone()),
        )
    };
    assert!(prepare().await.is_err(), "the one slot was taken");
    assert!(looping.await.unwrap().is_err());
    let prepared = prepare().await.unwrap();
    assert_eq!(prepared.starts_from(), &StartsFrom::Describe);
}

#[tokio::test]
async fn a_stream_that_describe_keeps_is_not_carried_into_calls() {
    // A snapshot would keep the stream's handle, which means nothing in the
    // next instance: the host must start calls from the component as built,
    // and say why, also when the compiled component comes from the cache.
    let dir = tempfile::tempdir().unwrap();
    for compiled in [1, 0] {
        let key = action_host_server::DataDir::kept_key(dir.path()).unwrap();
        let cache = Arc::new(action_host_server::DataDir::open(dir.path(), &key).unwrap());
        let host = Host::new(HostConfig {
            pool_size: 8,
            artifact_key: key.artifact_key(),
            ..HostConfig::default()
        })
        .unwrap();
        let prepared = host
            .prepare(
                "held-stream",
                &common::plugin_bytes("held_stream"),
                ActionSettings::default(),
                Some(cache),
            )
            .await
            .unwrap();
        match prepared.starts_from() {
            StartsFrom::Build { why } => assert!(why.contains("holds host resources"), "{why}"),
            other => panic!("started from {other:?}"),
        }
        host.install(prepared);
        for _ in 0..2 {
            let done = host
                .invoke("held-stream", CallContext::default(), &Map::new())
                .await
                .unwrap();
            assert_eq!(done.logs[0].message, "held stream");
        }
        // The second host reads the artifact, and the reason, from the cache.
        assert_eq!(host.compilations(), compiled);
    }
}

async fn call(
    host: &Host,
    input: Value,
) -> Result<action_host::Invocation, action_host::InvokeError> {
    host.invoke("fixture", CallContext::default(), &object(input))
        .await
}

#[tokio::test]
async fn an_outcome_that_repeats_one_string_is_refused_at_the_cap_and_the_host_serves_on() {
    let host = host_with("fixture", "fixture", None).await;
    // 100,000 messages of 64 KiB each, all one string in guest memory.
    let err = call(
        &host,
        json!({"behave": "alias-messages", "count": 100_000, "size": 64 << 10}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(
        err.message
            .starts_with("the action's outcome is over the host's cap of 4 MiB"),
        "{}",
        err.message
    );
    assert!(fixture("echo", &host).await.unwrap().success);
}

#[tokio::test]
async fn wasi_resources_a_guest_keeps_are_bounded_by_the_hosts_caps() {
    let host = Host::new(HostConfig {
        pool_size: 8,
        ..HostConfig::default()
    })
    .unwrap();
    host.load("wasi-hog", common::plugin_bytes("wasi_hog"))
        .await
        .unwrap();
    let hog = |input: Value| {
        let host = host.clone();
        async move {
            host.invoke("wasi-hog", CallContext::default(), &object(input))
                .await
        }
    };
    // 100,000 fields of 16,000 bytes each would be 1.6 GB in the host.
    let err = hog(json!({"behave": "fields", "count": 100_000, "size": 16_000}))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "the action held more than 1024 host resources at once (streams, pollables, HTTP \
         fields, requests and bodies)"
    );
    let err = hog(json!({"behave": "fields", "count": 1, "size": 100_000}))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "the action built HTTP headers over the host's cap of 16 KiB for one set of fields"
    );
    let err = hog(json!({"behave": "random", "size": 64 << 20}))
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("requested len 67108864 exceeds limit 1048576"),
        "{}",
        err.message
    );
    // Within the caps the same calls succeed.
    let made = hog(json!({"behave": "fields", "count": 500, "size": 1000}))
        .await
        .unwrap();
    assert_eq!(made.attributes["made"], 500);
    let random = hog(json!({"behave": "random", "size": 4096}))
        .await
        .unwrap();
    assert_eq!(random.attributes["bytes"], 4096);
    // Bodies of requests never sent: the host buffers little of each, not
    // megabytes the guest's memory limit does not see.
    let bodies = hog(json!({"behave": "bodies", "count": 100, "size": 8 << 20}))
        .await
        .unwrap();
    let buffered = bodies.attributes["buffered"].as_i64().unwrap();
    assert!(buffered <= 100 * (32 << 10), "{buffered} bytes buffered");
}

#[tokio::test]
async fn the_memory_limit_holds_over_the_sum_of_an_instances_memories() {
    use crate::common::padded::{Extra, padded};
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let host = Host::new(HostConfig {
        pool_size: 8,
        ..HostConfig::default()
    })
    .unwrap();
    let load = |bytes: Vec<u8>| {
        let host = host.clone();
        async move {
            let settings = ActionSettings {
                limits: Some(limits),
                ..ActionSettings::default()
            };
            host.load_with("fixture", bytes, settings).await
        }
    };
    // A second memory of 24 MiB beside the fixture's own: each is under the
    // 32 MiB limit, and the fixture may grow its own by what is left.
    let with_24 = padded(
        &common::plugin_bytes("fixture"),
        Extra {
            instances: 1,
            memory_pages: 384,
            table: false,
        },
    );
    load(with_24).await.unwrap();
    assert!(fixture("echo", &host).await.unwrap().success);
    let done = call(&host, json!({"behave": "allocate", "count": 4}))
        .await
        .unwrap();
    assert_eq!(done.attributes["allocated"], 4 << 20);
    let err = call(&host, json!({"behave": "allocate", "count": 12}))
        .await
        .unwrap_err();
    assert_eq!(
        err.message.split(" (").next().unwrap(),
        "the action exceeded its memory limit of 32 MiB"
    );
    // A second memory one page under the limit: under it alone, over it
    // with the fixture's own.
    let with_511_pages = padded(
        &common::plugin_bytes("fixture"),
        Extra {
            instances: 1,
            memory_pages: 511,
            table: false,
        },
    );
    let err = load(with_511_pages).await.unwrap_err().to_string();
    assert!(
        err.contains("the action exceeded its memory limit of 32 MiB"),
        "{err}"
    );
}

/// A caller that waits less than the action's deadline cuts it: the call
/// ends at the cap and the action sees the cap in its context; a cap above
/// the action's own deadline changes nothing.
#[tokio::test]
async fn a_deadline_cap_cuts_the_call_short_and_never_lengthens_it() {
    let host = Host::new(HostConfig {
        pool_size: 8,
        ..HostConfig::default()
    })
    .unwrap();
    let settings = ActionSettings {
        limits: Some(Limits {
            deadline: Duration::from_secs(2),
            ..Limits::default()
        }),
        ..ActionSettings::default()
    };
    let prepared = host
        .prepare("fixture", &common::plugin_bytes("fixture"), settings, None)
        .await
        .unwrap();
    let call = |behave: &str, cap: Duration| {
        let prepared = prepared.clone();
        let input = object(json!({ "behave": behave }));
        async move {
            prepared
                .invoke_within("id".into(), CallContext::default(), &input, cap)
                .await
        }
    };
    let context = call("context", Duration::from_millis(250)).await.unwrap();
    assert_eq!(context.attributes["deadline_ms"], 250);
    let context = call("context", Duration::from_secs(60)).await.unwrap();
    assert_eq!(context.attributes["deadline_ms"], 2000);

    let started = Instant::now();
    let err = call("loop", Duration::from_millis(250)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("250 ms"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(2));
}
