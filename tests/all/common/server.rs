//! The real `action-host serve` process on a loopback port, for API tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const OPERATOR: &str = "test-operator-token";
pub const DESIGNER: &str = "test-designer-token";
pub const INVOKE: &str = "test-invoke-token";
pub const METRICS: &str = "test-metrics-token";

/// The environment variables of the service's tokens.
pub const TOKEN_VARIABLES: [&str; 5] = [
    "ACTION_HOST_OPERATOR_TOKEN",
    "ACTION_HOST_DESIGNER_TOKEN",
    "ACTION_HOST_INVOKE_TOKEN",
    "ACTION_HOST_METRICS_TOKEN",
    "ACTION_HOST_ADMIN_TOKEN",
];

pub struct Server {
    child: Child,
    pub base: String,
    pub data: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the service on a free loopback port with `data` as its data
    /// directory, and waits until it listens.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(
            data,
            extra,
            &[
                ("ACTION_HOST_OPERATOR_TOKEN", OPERATOR),
                ("ACTION_HOST_DESIGNER_TOKEN", DESIGNER),
                ("ACTION_HOST_INVOKE_TOKEN", INVOKE),
                ("ACTION_HOST_METRICS_TOKEN", METRICS),
            ],
        )
    }

    /// Starts the service with exactly the token variables `env` (none of
    /// the others), so it generates the rest.
    pub fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_action-host"));
        for variable in TOKEN_VARIABLES {
            command.env_remove(variable);
        }
        command.envs(env.iter().copied());
        Server::spawn(command, data, extra)
    }

    /// Starts the service with the test tokens and returns as soon as it
    /// listens, while the actions it found may still be loading.
    pub fn start_loading(data: &Path, extra: &[&str]) -> Server {
        Server::listening(Server::command(), data, extra)
    }

    /// The `action-host` binary with the test tokens and no other token
    /// variable, for a test to add to.
    pub fn command() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_action-host"));
        for variable in TOKEN_VARIABLES {
            command.env_remove(variable);
        }
        command.envs([
            ("ACTION_HOST_OPERATOR_TOKEN", OPERATOR),
            ("ACTION_HOST_DESIGNER_TOKEN", DESIGNER),
            ("ACTION_HOST_INVOKE_TOKEN", INVOKE),
            ("ACTION_HOST_METRICS_TOKEN", METRICS),
        ]);
        command
    }

    /// Starts a replica on the PostgreSQL database `store` with the operator
    /// key `key` (hex), and waits until it has loaded what it found.
    pub fn start_replica(store: &str, key: &str, extra: &[&str]) -> Server {
        let server = Server::start_replica_loading(store, key, extra);
        server.wait_until_loaded();
        server
    }

    /// [`Server::start_replica`], returning as soon as it listens.
    pub fn start_replica_loading(store: &str, key: &str, extra: &[&str]) -> Server {
        let mut command = Server::command();
        command.env("ACTION_HOST_SECRET_KEY", key);
        let args: Vec<&str> = ["--store", store]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Server::listening(command, Path::new(""), &args)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the service with no token set, so it generates them all.
    pub fn start_without_tokens(data: &Path) -> Server {
        Server::start_with_env(data, &[], &[])
    }

    fn spawn(command: Command, data: &Path, extra: &[&str]) -> Server {
        let server = Server::listening(command, data, extra);
        server.wait_until_loaded();
        server
    }

    fn listening(mut command: Command, data: &Path, extra: &[&str]) -> Server {
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        // A replica keeps its state in PostgreSQL, not in a data directory.
        if !extra.contains(&"--store") {
            // Nor from what the environment running the tests may say.
            command.env_remove("ACTION_HOST_STORE");
            command.env_remove("ACTION_HOST_SECRET_KEY");
            command.arg("--data").arg(data);
        }
        let mut child = command
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start action-host serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                // Kept before the start is told, so it sees every line so far.
                log.lock().unwrap().push_str(&format!("{line}\n"));
                // In the text log and the JSON one alike.
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let address: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(address);
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {}", stderr.lock().unwrap()));
        Server {
            child,
            base,
            data: data.to_owned(),
            stderr,
        }
    }

    /// Waits until `/healthz` says every action found at start is loaded
    /// (the service listens before it has loaded them).
    pub fn wait_until_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if self.health().contains("\"status\":\"ok\"") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not finish loading: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The answer to `GET /healthz` with the designer's token (which sees
    /// what is loading and what failed), or "" when it does not answer.
    pub fn health(&self) -> String {
        use std::io::{Read as _, Write as _};
        let address = self.base.trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {DESIGNER}\r\n\
             Connection: close\r\n\r\n"
        );
        let _ = stream.write_all(request.as_bytes());
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// Writes `bytes` to a new connection and reads the first answer (up to
    /// 4 KiB): for requests no HTTP client would send.
    pub async fn raw_exchange(&self, bytes: &[u8]) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        String::from_utf8_lossy(&answer[..read]).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id of the service.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the service has open.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// The CPU time the service has used so far (user and system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The service's stderr once `done` holds for it (a reader thread copies
    /// it from the pipe, a moment after the service writes); panics naming
    /// `what` when it does not within 10 s.
    pub fn stderr_once(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stderr = self.stderr();
            if done(&stderr) {
                return stderr;
            }
            assert!(Instant::now() < deadline, "no {what} in:\n{stderr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it
    /// exited successfully.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command`, which must refuse to start, and returns its standard
/// error. A service that starts instead would serve forever, so a run that
/// outlives a deadline is killed and fails the test rather than hanging it.
pub fn refused(command: &mut Command) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("it started instead of refusing: {}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    assert!(!status.success(), "it exited successfully: {stderr}");
    stderr
}
