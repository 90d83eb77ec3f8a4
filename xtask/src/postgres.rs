//! A PostgreSQL server for the tests and benchmarks of the PostgreSQL store:
//! the one named by `ACTION_HOST_TEST_POSTGRES`, else one listening at
//! 127.0.0.1:5432, else a throwaway cluster made here with Debian's
//! `initdb` and `pg_ctl` (installing the `postgresql` package when they are
//! missing), on a free loopback port in a temporary directory, and removed
//! when it is dropped.

use anyhow::{Context as _, Result, bail};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The variable that names a server to use instead of starting one.
pub const SERVER_VARIABLE: &str = "ACTION_HOST_TEST_POSTGRES";

/// Where a server is: a URL of its maintenance database, as a superuser.
pub fn existing_server() -> Option<String> {
    if let Ok(url) = std::env::var(SERVER_VARIABLE)
        && !url.trim().is_empty()
    {
        return Some(url);
    }
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 5432));
    TcpStream::connect_timeout(&local, Duration::from_millis(200))
        .ok()
        .map(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Installs Debian's `postgresql` package unless its server programs are
/// there; returns the directory that holds `initdb` and `pg_ctl`.
pub fn ensure_installed() -> Result<PathBuf> {
    if let Some(bin) = bin_dir() {
        return Ok(bin);
    }
    eprintln!("PostgreSQL's server programs are missing; installing Debian's postgresql package");
    crate::plugins::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("cannot install PostgreSQL (apt-get install postgresql); install it and run again")?;
    bin_dir().context("the postgresql package is installed, but no initdb was found")
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A cluster of this process's own, stopped and removed when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Whether the programs run as the `postgres` user (this process is
    /// root, whom PostgreSQL refuses to run as).
    as_postgres: bool,
}

impl Cluster {
    /// Makes a cluster in a new temporary directory and starts it on a free
    /// loopback port, trusting local connections (it listens on loopback
    /// only, for this machine's tests).
    pub fn start() -> Result<Cluster> {
        let bin = ensure_installed()?;
        // SAFETY: geteuid only reads the process's user id.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = std::env::temp_dir().join(format!(
            "action-host-pg-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        if as_postgres {
            crate::plugins::run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let port = free_port()?;
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        cluster
            .program("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-instructions",
                "-D",
            ])
            .arg(cluster.data())
            .output()
            .context("cannot run initdb")
            .and_then(|out| checked("initdb", &out))?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// A URL of the cluster's maintenance database, as its superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: connections are closed), keeping
    /// its data.
    pub fn stop(&self) -> Result<()> {
        let out = self
            .program("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.data())
            .output()
            .context("cannot run pg_ctl stop")?;
        checked("pg_ctl stop", &out)
    }

    /// Starts the server again after [`Cluster::stop`], on the same port.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_start()
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = self
            .program("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.join("server.log"))
            .arg("-D")
            .arg(self.data())
            .output()
            .context("cannot run pg_ctl start")?;
        checked("pg_ctl start", &out).with_context(|| {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            format!("the server's log:\n{log}")
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .program("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn checked(what: &str, out: &std::process::Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throwaway_cluster_serves_stops_restarts_and_is_removed() {
        let cluster = Cluster::start().unwrap();
        let psql = |sql: &str| {
            Command::new(cluster.bin.join("psql"))
                .args([&cluster.url(), "-tAc", sql])
                .output()
                .unwrap()
        };
        let answer = psql("SELECT 40 + 2");
        assert_eq!(String::from_utf8_lossy(&answer.stdout).trim(), "42");
        cluster.stop().unwrap();
        assert!(!psql("SELECT 1").status.success(), "stopped");
        cluster.restart().unwrap();
        assert!(psql("SELECT 1").status.success(), "started again");
        let dir = cluster.dir.clone();
        drop(cluster);
        assert!(!dir.exists());
    }
}
