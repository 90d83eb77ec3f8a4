//! PostgreSQL for the tests of the PostgreSQL store: one server per test
//! process (named, local, or a throwaway cluster: `xtask::postgres`), and a
//! database of its own per test, dropped when the test is done.

use std::sync::{Mutex, OnceLock};
use xtask::postgres::Cluster;

/// The server every test shares: a URL of its maintenance database.
fn server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match xtask::postgres::existing_server() {
        Some(url) => url,
        None => {
            let cluster = Cluster::start().expect("start a PostgreSQL cluster for the tests");
            let url = cluster.url();
            *OWN.lock().unwrap() = Some(cluster);
            // Statics are not dropped: stop the cluster when the process exits.
            // SAFETY: registers a function with no arguments that touches only
            // the static below.
            unsafe { libc::atexit(stop_own_cluster) };
            url
        }
    })
}

/// The cluster this process started, if it did.
static OWN: Mutex<Option<Cluster>> = Mutex::new(None);

extern "C" fn stop_own_cluster() {
    if let Ok(mut own) = OWN.lock() {
        drop(own.take());
    }
}

/// A database of one test's own, dropped with it.
pub struct Database {
    /// Its URL, for `--store`.
    pub url: String,
    name: String,
    admin: String,
}

impl Database {
    /// A new database on the shared server.
    pub fn new() -> Database {
        Database::on(server())
    }

    /// A new database on the server whose maintenance database is `admin`.
    pub fn on(admin: &str) -> Database {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "action_host_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        execute(admin, &format!("CREATE DATABASE {name}")).expect("create a test database");
        let mut url = url::Url::parse(admin).expect("a server URL");
        url.set_path(&name);
        Database {
            url: url.to_string(),
            name,
            admin: admin.to_owned(),
        }
    }

    /// The rows of `sql` on this database, each as its columns' text.
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        query(&self.url, sql).expect("query the test database")
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = execute(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on the database at `url`, on a thread of its own (callers may
/// or may not be on a runtime).
pub fn execute(url: &str, sql: &str) -> Result<(), String> {
    query(url, sql).map(drop)
}

fn query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            tokio::spawn(connection);
            let messages = client
                .simple_query(&sql)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(db) => format!("{sql}: {}", db.message()),
                    None => format!("{sql}: {e}"),
                })?;
            Ok(messages
                .into_iter()
                .filter_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())
        })
    })
    .join()
    .map_err(|_| "the query thread panicked".to_owned())?
}
