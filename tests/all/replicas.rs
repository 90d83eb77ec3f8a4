//! Replicas as real processes on loopback, sharing one real PostgreSQL
//! database: what one is told, all serve; a race gives one 409; PostgreSQL
//! restarted or a replica killed loses nothing.

use crate::common;
use crate::common::postgres::Database;
use crate::common::server::{DESIGNER, INVOKE, OPERATOR, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The operator key every replica of a test is given.
const KEY: &str = "7265706c6963612074657374206f70657261746f72206b65792c203332206279";

fn greet() -> Value {
    json!({"input": {"first_name": "Ada"}, "context": {"timezone": "Europe/London"}})
}

/// `n` replicas on `db`, started at once (so their schema set-up races).
fn replicas(db: &Database, n: usize) -> Vec<Server> {
    let starting: Vec<_> = (0..n)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || Server::start_replica(&url, KEY, &[]))
        })
        .collect();
    starting.into_iter().map(|s| s.join().unwrap()).collect()
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn show(server: &Server, name: &str) -> (StatusCode, Value) {
    let url = server.url(&format!("/v1/actions/{name}"));
    send(common::api::client().get(url).bearer_auth(DESIGNER)).await
}

/// Waits (up to 10 s) until `server` shows `name` as `done` accepts it.
async fn shown(server: &Server, name: &str, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = show(server, name).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed the change: {status} {body}\n{}",
            server.base,
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn compilations(server: &Server) -> u64 {
    let (_, metrics) = common::api::operator_get(server, "/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("action_host_compilations_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no compilation count in {metrics}"))
}

#[tokio::test]
async fn what_one_replica_is_told_every_replica_serves() {
    let db = Database::new();
    let replicas = replicas(&db, 3);
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);

    let (status, first) =
        common::api::upload(a, "greeting", common::plugin_bytes("greeting")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    for other in [b, c] {
        shown(other, "greeting", |s, v| {
            s == StatusCode::OK && v["sha256"] == first["sha256"]
        })
        .await;
        let (status, called) = common::api::invoke(other, "greeting", greet()).await;
        assert_eq!(status, StatusCode::OK, "{called}");
        assert!(
            called["attributes"]["greeting"]
                .as_str()
                .unwrap()
                .contains("Ada")
        );
        // From the artifact the first replica compiled and stored.
        assert_eq!(compilations(other).await, 0, "{}", other.stderr());
    }

    // A new version through A while B serves calls: none of them fails.
    let calling = {
        let url = b.url("/v1/actions/greeting/invoke");
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..300 {
                let request = common::api::client()
                    .post(&url)
                    .bearer_auth(INVOKE)
                    .json(&greet());
                statuses.push(send(request).await.0);
            }
            statuses
        })
    };
    let variant = common::with_custom_section(&common::plugin_bytes("greeting"), "variant");
    let (status, newer) = common::api::upload(a, "greeting", variant).await;
    assert_eq!(status, StatusCode::OK, "{newer}");
    shown(b, "greeting", |_, v| v["sha256"] == newer["sha256"]).await;
    let statuses = calling.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let back = common::api::client()
        .post(a.url("/v1/actions/greeting/rollback"))
        .bearer_auth(DESIGNER)
        .json(&json!({"version": 1}));
    assert_eq!(send(back).await.0, StatusCode::OK);

    let config = common::api::client()
        .put(b.url("/v1/actions/greeting/config"))
        .bearer_auth(DESIGNER)
        .json(&json!({"tone": "warm"}));
    let (status, configured) = send(config).await;
    assert_eq!(status, StatusCode::OK, "{configured}");
    for other in [a, c] {
        shown(other, "greeting", |_, v| {
            v["settings"]["config"]["tone"] == "warm"
        })
        .await;
    }

    let (status, third) = common::api::upload(c, "greeting", common::plugin_bytes("fixture")).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(third["version"], 3);
    shown(a, "greeting", |_, v| v["version"] == 3).await;
    let rollback = common::api::client()
        .post(a.url("/v1/actions/greeting/rollback"))
        .bearer_auth(DESIGNER)
        .json(&json!({"version": 1}));
    let (status, back) = send(rollback).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    for other in [b, c] {
        let seen = shown(other, "greeting", |_, v| v["version"] == 1).await;
        assert_eq!(seen["sha256"], first["sha256"]);
        assert_eq!(
            seen["settings"]["config"]["tone"], "warm",
            "the current settings"
        );
    }

    let delete = common::api::client()
        .delete(b.url("/v1/actions/greeting"))
        .bearer_auth(DESIGNER);
    assert_eq!(send(delete).await.0, StatusCode::NO_CONTENT);
    for other in [a, c] {
        shown(other, "greeting", |s, _| s == StatusCode::NOT_FOUND).await;
        let (status, _) = common::api::invoke(other, "greeting", greet()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // Made again after the delete, it is new everywhere.
    let (status, again) =
        common::api::upload(c, "greeting", common::plugin_bytes("greeting")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    shown(a, "greeting", |s, v| {
        s == StatusCode::OK && v["version"] == 1
    })
    .await;
}

#[tokio::test]
async fn two_replicas_changing_one_action_at_once_give_one_409() {
    let db = Database::new();
    let replicas = replicas(&db, 2);
    let (a, b) = (&replicas[0], &replicas[1]);
    let (_, read) = common::api::upload(a, "fixture", common::plugin_bytes("fixture")).await;
    shown(b, "fixture", |s, _| s == StatusCode::OK).await;
    let revision = read["revision"].to_string();
    let change = |server: &Server, region: &str| {
        common::api::client()
            .put(server.url("/v1/actions/fixture/config"))
            .bearer_auth(DESIGNER)
            .header("if-match", format!("\"{revision}\""))
            .json(&json!({"region": region}))
    };
    let (one, other) = tokio::join!(send(change(a, "eu")), send(change(b, "us")));
    let mut statuses = [one.0, other.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} {}",
        one.1,
        other.1
    );
    let (won, lost) = if one.0 == StatusCode::OK {
        (one.1, other.1)
    } else {
        (other.1, one.1)
    };
    assert_eq!(lost["error"]["code"], "conflict");
    for server in [a, b] {
        let seen = shown(server, "fixture", |_, v| v["revision"] == won["revision"]).await;
        assert_eq!(seen["settings"]["config"], won["settings"]["config"]);
    }
}

#[tokio::test]
async fn replicas_serve_through_a_postgres_restart_and_catch_up_after() {
    // A server of this test's own: stopping it must not disturb the others.
    let cluster = xtask::postgres::Cluster::start().unwrap();
    let db = Database::on(&cluster.url());
    let replicas = replicas(&db, 2);
    let (a, b) = (&replicas[0], &replicas[1]);
    let (status, _) = common::api::upload(a, "greeting", common::plugin_bytes("greeting")).await;
    assert_eq!(status, StatusCode::CREATED);
    shown(b, "greeting", |s, _| s == StatusCode::OK).await;

    cluster.stop().unwrap();
    for server in [a, b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.health().contains("\"status\":\"degraded\"") {
            assert!(
                Instant::now() < deadline,
                "not degraded: {}",
                server.health()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            server.health().contains("PostgreSQL"),
            "{}",
            server.health()
        );
        for _ in 0..20 {
            let (status, called) = common::api::invoke(server, "greeting", greet()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "calls never touch the store: {called}"
            );
        }
        let (status, refused) =
            common::api::upload(server, "greeting", common::plugin_bytes("fixture")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
        assert_eq!(refused["error"]["code"], "store-unavailable", "{refused}");
    }

    cluster.restart().unwrap();
    for server in [a, b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.health().contains("\"status\":\"ok\"") {
            assert!(Instant::now() < deadline, "still: {}", server.health());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, changed) =
        common::api::upload(b, "greeting", common::plugin_bytes("fixture")).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    shown(a, "greeting", |_, v| v["version"] == 2).await;
    drop(replicas);
    drop(db);
}

#[tokio::test]
async fn a_replica_killed_during_an_upload_leaves_the_database_consistent() {
    let db = Database::new();
    let mut replicas = replicas(&db, 2);
    let b = replicas.pop().unwrap();
    let a = replicas.pop().unwrap();
    let (status, _) = common::api::upload(&a, "greeting", common::plugin_bytes("greeting")).await;
    assert_eq!(status, StatusCode::CREATED);
    shown(&b, "greeting", |s, _| s == StatusCode::OK).await;

    // The upload is in flight (the body sent, compiling: a large JavaScript
    // component takes seconds) when the replica dies.
    let upload = {
        let url = a.url("/v1/actions/greeting");
        tokio::spawn(async move {
            common::api::client()
                .put(url)
                .bearer_auth(OPERATOR)
                .body(common::plugin_bytes("weather-js"))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill();
    assert!(
        upload.await.unwrap().is_err(),
        "the connection died with the replica"
    );

    // Every record points at a stored version, and the survivor serves on.
    let dangling = db.query(
        "SELECT name FROM action_host_actions a WHERE record IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM action_host_versions v WHERE v.sha256 = a.serving_sha256)",
    );
    assert!(dangling.is_empty(), "{dangling:?}");
    let broken = common::postgres::execute(
        &db.url,
        "UPDATE action_host_actions SET serving_sha256 = 'nothing-stored-here'",
    );
    assert!(
        broken.unwrap_err().contains("foreign key"),
        "the schema forbids a dangling pointer"
    );
    let (status, called) = common::api::invoke(&b, "greeting", greet()).await;
    assert_eq!(status, StatusCode::OK, "{called}");
    let (status, changed) =
        common::api::upload(&b, "greeting", common::plugin_bytes("fixture")).await;
    assert!(status.is_success(), "{changed}");
}

#[tokio::test]
async fn the_database_holds_no_secret_value_in_the_clear() {
    let db = Database::new();
    let replicas = replicas(&db, 2);
    let (a, b) = (&replicas[0], &replicas[1]);
    let (status, _) = common::api::upload(a, "greeting", common::plugin_bytes("greeting")).await;
    assert_eq!(status, StatusCode::CREATED);
    let grants = json!({
        "grants": ["https://crm.example.com"],
        "secrets": [{"name": "crm", "value": "s3cr3t-never-in-the-clear", "allow": ["https://crm.example.com"]}]
    });
    let (status, set) = common::api::set_grants(a, "greeting", grants).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    shown(b, "greeting", |_, v| {
        v["settings"]["secrets"][0]["name"] == "crm"
    })
    .await;

    let dump = db.query("SELECT record::text FROM action_host_actions");
    let text = format!("{dump:?}");
    assert!(text.contains("crm"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("sealed_value"), "{text}");
    // The other replica opened it with the same key: it serves the secret.
    let (status, shown) = show(b, "greeting").await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(
        shown["settings"]["secrets"][0]["value"],
        "s3cr3t-never-in-the-clear"
    );
}

#[tokio::test]
async fn a_replica_refuses_to_start_without_the_operator_key_and_says_why() {
    let db = Database::new();
    let stderr = common::server::refused(
        Server::command()
            .args(["serve", "--listen", "127.0.0.1:0", "--store", &db.url])
            .env_remove("ACTION_HOST_SECRET_KEY"),
    );
    assert!(stderr.contains("ACTION_HOST_SECRET_KEY"), "{stderr}");
    let stderr = common::server::refused(
        Server::command()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                "postgres://nobody@127.0.0.1:1/none",
            ])
            .env("ACTION_HOST_SECRET_KEY", KEY),
    );
    assert!(
        stderr.contains("cannot connect to PostgreSQL at postgres://nobody@127.0.0.1:1/none"),
        "{stderr}"
    );
}

/// Change numbers are drawn when a write begins and seen when it commits:
/// a write that drew its number first but commits last must not be passed
/// over by a replica that has already seen a later number. Here a write to
/// `x` is held open by hand while a replica's store writes `y`; the other
/// replica's feed must report both.
#[tokio::test]
async fn a_change_committed_after_a_later_one_is_not_missed() {
    use action_host_server::{ActionRecord, Postgres, Store, StoreError};
    let db = Database::new();
    let key = action_host_server::OperatorKey::generate();
    let writer = Postgres::connect(&db.url, &key).await.unwrap();
    let bytes = bytes::Bytes::from_static(b"a component");
    let sha256 = action_host::sha256_hex(&bytes);
    writer.put_version(&sha256, bytes).await.unwrap();
    let record = ActionRecord {
        revision: 1,
        sha256,
        version: 1,
        settings: Default::default(),
        changed_at_ms: 0,
        versions: Vec::new(),
    };
    for name in ["x", "y"] {
        writer
            .swap_record(name, None, Some(record.clone()))
            .await
            .unwrap();
    }
    let follower = Postgres::connect(&db.url, &key).await.unwrap();
    let mut changes = follower.changes();

    let (held, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    held.batch_execute(
        "BEGIN; UPDATE action_host_actions SET change_seq = nextval('action_host_change_seq') \
         WHERE name = 'x'",
    )
    .await
    .unwrap();
    let newer = ActionRecord {
        revision: 2,
        ..record.clone()
    };
    let later = tokio::spawn(async move { writer.swap_record("y", Some(1), Some(newer)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.batch_execute("SELECT pg_notify('action_host_changes', 'x'); COMMIT")
        .await
        .unwrap();
    later.await.unwrap().unwrap();

    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, changes.recv()).await {
            Ok(Ok(change)) => {
                seen.insert(change.name);
            }
            _ => panic!("the feed reported only {seen:?}"),
        }
    }

    // A write that keeps holding the records (a replica cut off mid-write)
    // makes the others give up after a while, saying why.
    held.batch_execute("BEGIN; LOCK TABLE action_host_actions IN SHARE ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let waited = Instant::now();
    let newest = ActionRecord {
        revision: 3,
        ..record
    };
    let refused = follower
        .swap_record("y", Some(2), Some(newest))
        .await
        .unwrap_err();
    assert!(
        waited.elapsed() < Duration::from_secs(10),
        "{:?}",
        waited.elapsed()
    );
    assert!(
        matches!(refused, StoreError::Unavailable(_))
            && refused
                .to_string()
                .contains("another write to the actions held them"),
        "{refused}"
    );
    held.batch_execute("ROLLBACK").await.unwrap();
}
