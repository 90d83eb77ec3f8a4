//! The real `action-host serve` process on a loopback port, for API tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "test-admin-token";
pub const INVOKE: &str = "test-invoke-token";

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
        let mut command = Command::new(env!("CARGO_BIN_EXE_action-host"));
        command
            .env("ACTION_HOST_ADMIN_TOKEN", ADMIN)
            .env("ACTION_HOST_INVOKE_TOKEN", INVOKE);
        Server::spawn(command, data, extra)
    }

    /// Starts the service with neither token set, so it generates them.
    pub fn start_without_tokens(data: &Path) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_action-host"));
        command
            .env_remove("ACTION_HOST_ADMIN_TOKEN")
            .env_remove("ACTION_HOST_INVOKE_TOKEN");
        Server::spawn(command, data, &[])
    }

    fn spawn(mut command: Command, data: &Path, extra: &[&str]) -> Server {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
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
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = tx.send(address.to_owned());
                }
                log.lock().unwrap().push_str(&format!("{line}\n"));
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

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
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
