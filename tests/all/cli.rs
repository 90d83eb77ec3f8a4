//! The `action-host` command end to end: real components built from source.

use crate::common;

use serde_json::{Value, json};
use std::process::{Command, Output};

fn action_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_action-host"))
        .args(args)
        .output()
        .expect("run action-host")
}

fn run(plugin: &str, extra: &[&str]) -> Output {
    let path = common::plugin(plugin);
    let mut args = vec!["run", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    action_host(&args)
}

/// Runs `action-host` with `args` and returns its output and its peak resident
/// memory in KiB, read from the kernel's accounting of that one child.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped with wait4, which also reports its peak memory"
)]
fn action_host_measured(args: &[&str]) -> (Output, i64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_action-host"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run action-host");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).map(|_| bytes)
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own child, not yet waited for; both pointers are valid.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    };
    (output, usage.ru_maxrss)
}

/// The least peak of `runs` runs of `action-host` with `args`, and the last
/// run's output. A process's peak moves by up to 25 MiB from run to run
/// (threads and the allocator's arenas), while what a call makes it hold only
/// adds to it, so the least is the closest to what the call itself holds.
fn action_host_least_peak(args: &[&str], runs: usize) -> (Output, i64) {
    let mut least = i64::MAX;
    let mut output = None;
    for _ in 0..runs {
        let (out, kib) = action_host_measured(args);
        least = least.min(kib);
        output = Some(out);
    }
    (output.expect("at least one run"), least)
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn stderr(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_prints_the_outcome_as_json() {
    let out = run(
        "greeting",
        &[
            "--input",
            r#"{"first_name":"Ada","is_member":true}"#,
            "--context",
            r#"{"timezone":"Europe/Paris"}"#,
        ],
    );
    let result = stdout_json(&out);
    assert_eq!(result["success"], true);
    assert!(
        result["attributes"]["greeting"]
            .as_str()
            .unwrap()
            .contains("Ada! Thanks for being a member.")
    );
    assert_eq!(result["messages"].as_array().unwrap().len(), 1);
    assert!(result["logs"].is_array());
    assert!(result["duration_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_business_failure_exits_zero() {
    let result = stdout_json(&run("fixture", &["--input", r#"{"behave":"fail"}"#]));
    assert_eq!(result["success"], false);
    assert_eq!(result["messages"], json!(["no previous order"]));
}

#[test]
fn config_values_reach_the_action() {
    let out = run(
        "fixture",
        &[
            "--input",
            r#"{"behave":"config","key":"region"}"#,
            "--config",
            "region=eu-west",
        ],
    );
    assert_eq!(stdout_json(&out)["attributes"]["value"], "eu-west");
}

#[test]
fn a_timeout_fails_with_a_clear_message() {
    let err = stderr(&run(
        "fixture",
        &["--input", r#"{"behave":"loop"}"#, "--timeout-ms", "200"],
    ));
    assert!(
        err.contains("error: timeout: the action did not finish within its deadline of 200 ms"),
        "{err}"
    );
}

#[test]
fn a_panic_fails_with_the_trap_and_panic_messages() {
    let err = stderr(&run("fixture", &["--input", r#"{"behave":"panic"}"#]));
    assert!(err.contains("error: internal: "), "{err}");
    assert!(err.contains("the fixture panicked on purpose"), "{err}");
}

#[test]
fn the_memory_limit_is_set_from_the_command_line() {
    let err = stderr(&run(
        "fixture",
        &[
            "--input",
            r#"{"behave":"grow-memory"}"#,
            "--memory-mib",
            "8",
        ],
    ));
    assert!(err.contains("memory limit of 8 MiB"), "{err}");
}

#[test]
fn malformed_input_is_named() {
    let err = stderr(&run("greeting", &["--input", "{first_name: Ada}"]));
    assert!(err.contains("--input is not valid JSON"), "{err}");
    let err = stderr(&run("greeting", &["--input", "[1, 2]"]));
    assert!(err.contains("--input must be a JSON object"), "{err}");
    let err = stderr(&run(
        "greeting",
        &[
            "--input",
            r#"{"first_name":"Ada"}"#,
            "--context",
            r#"{"tz":"UTC"}"#,
        ],
    ));
    assert!(err.contains("unknown field `tz`"), "{err}");
    let err = stderr(&run(
        "greeting",
        &["--input", r#"{"first_name":"Ada"}"#, "--config", "novalue"],
    ));
    assert!(
        err.contains("--config expects KEY=VALUE, got `novalue`"),
        "{err}"
    );
}

#[test]
fn a_missing_or_mistyped_attribute_is_named() {
    let err = stderr(&run("greeting", &["--input", "{}"]));
    assert!(
        err.contains("error: invalid-input: the required input `first_name` is missing"),
        "{err}"
    );
    let err = stderr(&run(
        "greeting",
        &["--input", r#"{"first_name":"Ada","is_member":3}"#],
    ));
    assert!(
        err.contains("input `is_member`: expected a boolean, got a number"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let err = stderr(&action_host(&["run", garbage.to_str().unwrap()]));
    assert!(err.contains("not a WebAssembly component"), "{err}");
    let err = stderr(&action_host(&[
        "run",
        dir.path().join("missing.wasm").to_str().unwrap(),
    ]));
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn inspect_prints_the_manifest_imports_and_exports() {
    let path = common::plugin("greeting");
    let result = stdout_json(&action_host(&["inspect", path.to_str().unwrap()]));
    assert_eq!(result["manifest"]["name"], "greeting");
    assert_eq!(result["manifest"]["inputs"][0]["name"], "first_name");
    assert_eq!(result["manifest"]["inputs"][0]["kind"], "text");
    let exports = result["exports"].as_array().unwrap();
    assert!(
        exports.iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("webhook:action/action@0.1.0 (instance: describe, run)")),
        "{exports:?}"
    );
    let imports = result["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasi:")),
        "{imports:?}"
    );
}

fn run_blocking(plugin: &'static str, args: Vec<String>) -> tokio::task::JoinHandle<Output> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(plugin, &args)
    })
}

#[tokio::test]
async fn allow_and_secret_flags_grant_destinations_and_bind_secrets() {
    let mock = common::mock::Mock::start().await;
    let p = mock.port;
    let args = vec![
        "--input".to_string(),
        r#"{"email":"ada@example.com"}"#.to_string(),
        "--config".to_string(),
        format!("crm_url={}", mock.url("/crm/leads")),
        "--allow".to_string(),
        format!("POST http://127.0.0.1:{p}/crm/leads"),
        "--secret".to_string(),
        format!("crm_token=cli-t0k3n@POST http://127.0.0.1:{p}/crm/leads"),
    ];
    let out = run_blocking("lead_capture", args).await.unwrap();
    let result = stdout_json(&out);
    assert_eq!(result["attributes"]["lead_id"], "lead-77");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("cli-t0k3n"));
    assert_eq!(
        mock.received()[0].header("authorization"),
        Some("Bearer cli-t0k3n")
    );

    // Without --allow the same call is denied.
    let args = vec![
        "--input".into(),
        r#"{"email":"ada@example.com"}"#.into(),
        "--config".into(),
        format!("crm_url={}", mock.url("/crm/leads")),
    ];
    let err = stderr(&run_blocking("lead_capture", args).await.unwrap());
    assert!(err.contains("error: denied: no grant allows POST"), "{err}");
}

#[test]
fn a_bad_grant_or_secret_flag_says_how_to_fix_it() {
    let err = stderr(&run(
        "fixture",
        &[
            "--input",
            r#"{"behave":"echo"}"#,
            "--allow",
            "api.example.com",
        ],
    ));
    assert!(
        err.contains("invalid grant `api.example.com`: start with http:// or https://"),
        "{err}"
    );
    let err = stderr(&run(
        "fixture",
        &["--input", r#"{"behave":"echo"}"#, "--secret", "token"],
    ));
    assert!(err.contains("--secret expects NAME=VALUE@GRANT"), "{err}");
}

#[test]
fn a_host_configuration_file_grants_and_configures_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host.toml");
    std::fs::write(
        &file,
        "[actions.fixture]\nconfig = { region = \"eu-west\" }\nlimits = { deadline_ms = 250 }\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = run(
        "fixture",
        &[
            "--input",
            r#"{"behave":"config","key":"region"}"#,
            "--host-config",
            file,
        ],
    );
    assert_eq!(stdout_json(&out)["attributes"]["value"], "eu-west");
    let err = stderr(&run(
        "fixture",
        &["--input", r#"{"behave":"loop"}"#, "--host-config", file],
    ));
    assert!(err.contains("deadline of 250 ms"), "{err}");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[actions.fixture]\ngrants = [\"ftp://x\"]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    let err = stderr(&run(
        "fixture",
        &["--input", "{}", "--host-config", bad.to_str().unwrap()],
    ));
    assert!(
        err.contains("action `fixture`: invalid grant `ftp://x`"),
        "{err}"
    );
}

/// A guest that loops on `http.send` with a long URL (just under the gate's
/// 8 KiB cap) that no grant allows gets
/// `budget-exhausted` after the budget: refused attempts count against it, the
/// log keeps a bounded number of short notes, and the host's memory does not
/// grow with the number of attempts.
#[test]
fn refused_requests_in_a_loop_keep_the_log_and_the_host_memory_bounded() {
    let fixture = common::plugin("fixture");
    let flood = |count: u32| {
        let input = json!({"behave": "http-flood", "count": count, "size": 8000}).to_string();
        let args = [
            "run",
            fixture.to_str().unwrap(),
            "--input",
            &input,
            "--timeout-ms",
            "60000",
        ];
        let (out, peak_kib) = action_host_least_peak(&args, 3);
        (stdout_json(&out), peak_kib)
    };
    let (few, few_kib) = flood(100);
    let (many, many_kib) = flood(100_000);
    for (result, count) in [(&few, 100), (&many, 100_000)] {
        assert_eq!(
            result["attributes"]["denied"], 8,
            "{}",
            result["attributes"]
        );
        assert_eq!(result["attributes"]["budget_exhausted"], count - 8);
        let logs = result["logs"].as_array().unwrap();
        let bytes: usize = logs
            .iter()
            .map(|l| l["message"].as_str().unwrap().len())
            .sum();
        assert!(bytes <= 8 << 10, "{bytes} bytes of log");
        assert!(
            logs.iter()
                .all(|l| l["message"].as_str().unwrap().len() < 1024),
            "a note repeats the whole URL"
        );
    }
    let last = many["logs"].as_array().unwrap().last().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(last.contains("more host notes dropped"), "{last}");
    // 100,000 attempts with a 64 KiB URL each would be 6 GiB if notes kept them.
    let grown = many_kib - few_kib;
    assert!(
        grown < 32 << 10,
        "the host grew by {grown} KiB ({few_kib} KiB after 100 attempts, {many_kib} KiB after 100,000)"
    );
}

/// What a guest hands the host that is small in guest memory and large once
/// copied, or kept in host resources, stays within the host's caps: the
/// process grows by no more than a few MiB over an ordinary call.
#[test]
fn what_a_guest_makes_the_host_hold_stays_within_the_caps() {
    let peak = |plugin: &str, input: Value| {
        let path = common::plugin(plugin);
        let input = input.to_string();
        action_host_least_peak(&["run", path.to_str().unwrap(), "--input", &input], 5).1
    };
    let ordinary = peak("fixture", json!({"behave": "echo"}));
    for (plugin, input) in [
        // 100,000 messages of 64 KiB that are one string in guest memory.
        (
            "fixture",
            json!({"behave": "alias-messages", "count": 100_000, "size": 64 << 10}),
        ),
        // 100,000 header sets of 16,000 bytes kept at once.
        (
            "wasi_hog",
            json!({"behave": "fields", "count": 100_000, "size": 16_000}),
        ),
        ("wasi_hog", json!({"behave": "random", "size": 64 << 20})),
        // 3.9 MB of `[[],[],...]`: 1.3 million values once parsed.
        (
            "fixture",
            json!({"behave": "wide-json", "count": 1_300_000}),
        ),
    ] {
        let kib = peak(plugin, input.clone());
        assert!(
            kib < ordinary + (24 << 10),
            "{input}: {kib} KiB at peak, {ordinary} KiB for an ordinary call"
        );
    }
}

/// A `json` attribute counts each of its values against the outcome's cap,
/// as the host will hold it parsed: a small one passes, a wide one is refused
/// naming why.
#[test]
fn a_json_output_counts_its_values_against_the_outcome_cap() {
    let input = |count: u32| json!({"behave": "wide-json", "count": count}).to_string();
    let done = stdout_json(&run("fixture", &["--input", &input(10_000)]));
    assert_eq!(done["attributes"]["wide"].as_array().unwrap().len(), 10_000);
    let err = stderr(&run("fixture", &["--input", &input(1_300_000)]));
    assert!(
        err.contains("over the host's cap of 4 MiB")
            && err.contains("each value in a json attribute 32"),
        "{err}"
    );
}

/// A secret's value can come from the environment or a file, so that it is
/// not in the process list; either way it reaches its destination only.
#[tokio::test]
async fn secret_values_come_from_the_environment_or_a_file() {
    let mock = common::mock::Mock::start().await;
    let p = mock.port;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crm-token");
    std::fs::write(&file, "from-a-file-t0k3n\n").unwrap();
    let grant = format!("POST http://127.0.0.1:{p}/crm/leads");
    for (flag, what) in [
        ("--secret-env", "CRM_TOKEN_FOR_THE_TEST".to_string()),
        ("--secret-file", file.to_str().unwrap().to_string()),
    ] {
        let args = [
            "run".to_string(),
            common::plugin("lead_capture").to_str().unwrap().to_string(),
            "--input".into(),
            r#"{"email":"ada@example.com"}"#.into(),
            "--config".into(),
            format!("crm_url={}", mock.url("/crm/leads")),
            "--allow".into(),
            grant.clone(),
            flag.into(),
            format!("crm_token={what}@{grant}"),
        ];
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_action-host"))
                .args(&args)
                .env("CRM_TOKEN_FOR_THE_TEST", "from-the-env-t0k3n")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(stdout_json(&out)["attributes"]["lead_id"], "lead-77");
    }
    let sent: Vec<_> = mock
        .received()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        sent,
        ["Bearer from-the-env-t0k3n", "Bearer from-a-file-t0k3n"]
    );

    // Bound to another header, the secret is refused for Authorization.
    let out = action_host(&[
        "run",
        common::plugin("lead_capture").to_str().unwrap(),
        "--input",
        r#"{"email":"ada@example.com"}"#,
        "--config",
        &format!("crm_url={}", mock.url("/crm/leads")),
        "--allow",
        &grant,
        "--secret",
        &format!("crm_token=long-enough-value@{grant}"),
        "--secret-header",
        "crm_token=x-api-key",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("the secret `crm_token` may fill only the header(s) x-api-key"),
        "{err}"
    );
    let out = action_host(&[
        "run",
        common::plugin("lead_capture").to_str().unwrap(),
        "--secret-env",
        &format!("crm_token=NOT_SET_ANYWHERE_FOR_THE_TEST@{grant}"),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("--secret-env crm_token: the environment variable `NOT_SET_ANYWHERE_FOR_THE_TEST` is not set"),
        "{err}"
    );
}

/// `action-host` as a client of `server`, with `token` in ACTION_HOST_TOKEN.
fn client(server: &common::server::Server, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_action-host"))
        .args(args)
        .env("ACTION_HOST_URL", &server.base)
        .env("ACTION_HOST_TOKEN", token)
        .output()
        .expect("run action-host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn deploy_and_actions_drive_a_running_service() {
    use common::server::{DESIGNER, OPERATOR, Server};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let greeting = common::plugin("greeting");
    let fixture = common::plugin("fixture");

    let out = client(
        &server,
        DESIGNER,
        &["deploy", greeting.to_str().unwrap(), "--name", "thing"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("created thing: version 1"));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["version"], 1);

    let out = client(
        &server,
        DESIGNER,
        &[
            "deploy",
            fixture.to_str().unwrap(),
            "--name",
            "thing",
            "--config",
            "region=eu",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["settings"]["config"]["region"], "eu");

    let out = client(&server, DESIGNER, &["actions", "list"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with("thing\tversion 2\t"),
        "{}",
        text(&out.stdout)
    );

    let out = client(&server, DESIGNER, &["actions", "rollback", "thing", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("thing serves version 1 again"));
    let out = client(&server, DESIGNER, &["actions", "show", "thing"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);

    // Settings need the operator: with a designer's token the upload
    // serves, and the command says the settings were not applied.
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, "grants = [\"GET https://api.example.com/\"]\n").unwrap();
    let args = [
        "deploy",
        greeting.to_str().unwrap(),
        "--name",
        "thing",
        "--settings",
        settings.to_str().unwrap(),
    ];
    let out = client(&server, DESIGNER, &args);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("its settings were not applied")
            && stderr.contains("403 Forbidden forbidden"),
        "{stderr}"
    );
    let out = client(&server, OPERATOR, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["settings"]["grants"][0],
        "GET https://api.example.com/"
    );

    // Mistakes are named and exit non-zero.
    for (token, args, why) in [
        (
            "not-a-token-of-this-service",
            vec!["actions", "list"],
            "401 Unauthorized unauthorized",
        ),
        (
            DESIGNER,
            vec!["actions", "show", "nothing"],
            "unknown-action",
        ),
        (
            DESIGNER,
            vec!["actions", "rollback", "thing", "99"],
            "unknown-version",
        ),
        (
            DESIGNER,
            vec!["actions", "rollback", "thing", "latest"],
            "a version number or a SHA-256",
        ),
        (
            DESIGNER,
            vec!["deploy", "/nonexistent.wasm"],
            "cannot read /nonexistent.wasm",
        ),
    ] {
        let out = client(&server, token, &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_action-host"))
        .args(["actions", "list", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot reach the service at http://127.0.0.1:1"));
}

/// A server on a loopback port that is not the service: it answers
/// `GET /v1/actions` with names that hold terminal controls, `GET
/// /v1/actions/endless` with a body that does not end (256 MiB), and
/// anything else with an error whose code and message hold them. It serves
/// `connections` connections, then stops.
fn impostor(connections: usize) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            let (status, body) = match request.split(' ').nth(1).unwrap() {
                "/v1/actions" => (
                    "200 OK",
                    json!({"actions": [{
                        "name": "a\u{1b}[2J\u{1b}]0;owned\u{7}",
                        "version": 1,
                        "sha256": "\u{9b}31m",
                    }]}),
                ),
                "/v1/actions/endless" => {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                connection: close\r\n\r\n";
                    stream.write_all(head.as_bytes()).unwrap();
                    let spaces = vec![b' '; 64 << 10];
                    for _ in 0..(256 << 20) / spaces.len() {
                        if stream.write_all(&spaces).is_err() {
                            break;
                        }
                    }
                    continue;
                }
                _ => (
                    "400 Bad Request",
                    json!({"error": {"code": "x\u{1b}[8m", "message": "hidden\u{1b}[8m\u{85}"}}),
                ),
            };
            let body = body.to_string();
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (base, server)
}

/// Whether `text` holds a control character besides the line and column
/// breaks the command writes itself.
fn has_controls(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
}

#[test]
fn what_answers_at_the_service_url_cannot_drive_the_terminal_or_fill_memory() {
    let (base, server) = impostor(3);
    let out = action_host(&["actions", "list", "--url", &base]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!has_controls(&shown), "{shown:?}");
    assert!(
        shown.starts_with("a\\u001b[2J\\u001b]0;owned\\u0007\tversion 1\t\\u009b31m"),
        "{shown:?}"
    );

    let (out, peak_kib) = action_host_measured(&["actions", "show", "endless", "--url", &base]);
    let err = stderr(&out);
    assert!(
        err.contains("the service's answer to GET /v1/actions/endless")
            && err.contains("it is over 16 MiB"),
        "{err}"
    );
    assert!(peak_kib < 128 << 10, "the client peaked at {peak_kib} KiB");

    let out = action_host(&["actions", "rollback", "thing", "1", "--url", &base]);
    let err = stderr(&out);
    assert!(!has_controls(&err), "{err:?}");
    assert!(
        err.contains("400 Bad Request x\\u001b[8m: hidden\\u001b[8m\\u0085"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn the_service_logs_json_lines_when_asked() {
    use common::server::Server;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--log-format", "json"]);
    let stderr = server.stderr();
    let listening = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on http://127.0.0.1:"))
        });
    let line = listening.unwrap_or_else(|| panic!("no JSON line says where it listens:\n{stderr}"));
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].is_string());
}

/// Each action's load lines are in a span of that action alone, however the
/// loads interleave: an operator filters the log by action.
#[test]
fn each_load_logs_in_its_own_span() {
    use common::server::Server;
    let dir = tempfile::tempdir().unwrap();
    let greeting = format!("greeting={}", common::plugin("greeting").display());
    let fixture = format!("fixture={}", common::plugin("fixture").display());
    let order = format!("order-lookup={}", common::plugin("order_lookup").display());
    let server = Server::start(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--deploy",
            &greeting,
            "--deploy",
            &fixture,
            "--deploy",
            &order,
        ],
    );
    let stderr = server.stderr_once("three `ready` lines", |s| {
        s.matches(" ready in ").count() >= 3
    });
    let mut ready = 0;
    for line in stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
    {
        let message = line["fields"]["message"]
            .as_str()
            .or(line["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        let Some((name, _)) = message.split_once(" ready in ") else {
            continue;
        };
        ready += 1;
        assert_eq!(
            line["spans"],
            json!([{"name": "load", "action": name}]),
            "{line}"
        );
    }
    assert_eq!(ready, 3, "{stderr}");
}
