//! A MongoDB server for tests.
//!
//! Every MongoDB test asks [`test_mongodb_uri`] for a connection string with
//! a database of its own. When `SQLARENA_TEST_MONGODB_URI` is set, that
//! server is used (a real mongod); otherwise one `nx-27017` (a MongoDB
//! wire-protocol server backed by SQLite, installed into `.venv/` by
//! `scripts/mongo-test-server.sh`) is started per test process, on a free
//! loopback port, with isolated in-memory databases.
//!
//! Statics are never dropped, so the server cannot be stopped by a `Drop`:
//! it runs under a small `sh` watchdog that kills it as soon as the test
//! process is gone (also after a panic, `kill -9` or a crash).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable naming a MongoDB server to test against instead of
/// starting nx-27017.
pub const TEST_MONGODB_URI_VAR: &str = "SQLARENA_TEST_MONGODB_URI";

/// How long nx-27017 may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Watchdog run by `sh -c`: starts the server in the background, then polls
/// every half second until the test process ($1) or the server is gone,
/// and stops the server. Arguments: parent pid, nx-27017 path, port, pid
/// file. The server's output goes to the watchdog's stdout/stderr.
const WATCHDOG: &str = r#"
parent="$1"; server="$2"; port="$3"; pid_file="$4"
"$server" --data-dir memory --host 127.0.0.1 -p "$port" --log-file /dev/null --pid-file "$pid_file" &
child=$!
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do
    sleep 0.5
done
kill "$child" 2>/dev/null
sleep 1
kill -9 "$child" 2>/dev/null
rm -f "$pid_file"
"#;

/// True when the tests run against the nx-27017 stand-in rather than a
/// server named by `SQLARENA_TEST_MONGODB_URI` (quirk tests assert the
/// stand-in's deviations only there).
pub fn using_nx_27017() -> bool {
    std::env::var(TEST_MONGODB_URI_VAR)
        .map(|uri| uri.trim().is_empty())
        .unwrap_or(true)
}

/// Returns a connection string for a fresh, empty database (named
/// `sqlarena_test_<uuid>`) on the test server, starting nx-27017 on first
/// use.
///
/// # Panics
/// Panics with instructions when nx-27017 is not installed, or when it does
/// not start.
pub fn test_mongodb_uri() -> String {
    with_database(
        test_mongodb_server(),
        &format!("sqlarena_test_{}", uuid::Uuid::new_v4().simple()),
    )
}

/// Returns the test server's base connection string (no database chosen):
/// `SQLARENA_TEST_MONGODB_URI` if set, else that of this process's
/// nx-27017, started on first use.
///
/// # Panics
/// As [`test_mongodb_uri`].
pub fn test_mongodb_server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(TEST_MONGODB_URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => uri.trim().to_owned(),
        _ => start_nx_27017(),
    })
}

/// Replaces the database path of a `mongodb://` URI, keeping its options.
fn with_database(uri: &str, database: &str) -> String {
    let (base, options) = match uri.split_once('?') {
        Some((base, options)) => (base, Some(options)),
        None => (uri, None),
    };
    let scheme_end = base.find("://").map(|at| at + 3).unwrap_or(0);
    let hosts_end = base[scheme_end..]
        .find('/')
        .map(|at| scheme_end + at)
        .unwrap_or(base.len());
    let mut result = format!("{}/{database}", &base[..hosts_end]);
    if let Some(options) = options {
        result.push('?');
        result.push_str(options);
    }
    result
}

/// Starts nx-27017 under the watchdog and waits until it accepts
/// connections; returns its URI.
fn start_nx_27017() -> String {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let server = workspace.join(".venv/bin/nx-27017");
    if !server.is_file() {
        panic!(
            "nx-27017 is not installed at {}: run scripts/mongo-test-server.sh (or scripts/setup.sh) \
             or set {TEST_MONGODB_URI_VAR}",
            server.display()
        );
    }
    let port = free_port();
    let scratch = std::env::temp_dir();
    let tag = format!("sqlarena-nx-27017-{}-{port}", std::process::id());
    let log_path = scratch.join(format!("{tag}.log"));
    let pid_path = scratch.join(format!("{tag}.pid"));
    let log = File::create(&log_path)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", log_path.display()));
    let log_err = log.try_clone().expect("clone log file handle");
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("sqlarena-nx-watchdog")
        .arg(std::process::id().to_string())
        .arg(&server)
        .arg(port.to_string())
        .arg(&pid_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start sh to run nx-27017: {error}"));

    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            break;
        }
        let exited = watchdog.try_wait().ok().flatten();
        if exited.is_some() || started.elapsed() > STARTUP_TIMEOUT {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "nx-27017 did not start on {address} (exit: {exited:?}); its output ({}):\n{output}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The watchdog is left running (not waited for): it ends with this
    // process and takes the server with it.
    drop(watchdog);
    format!("mongodb://{address}")
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_and_options_kept() {
        assert_eq!(with_database("mongodb://h:1", "d"), "mongodb://h:1/d");
        assert_eq!(with_database("mongodb://h:1/old", "d"), "mongodb://h:1/d");
        assert_eq!(
            with_database("mongodb://u@h:1,h2:2/old?replicaSet=rs", "d"),
            "mongodb://u@h:1,h2:2/d?replicaSet=rs"
        );
        assert_eq!(
            with_database("mongodb://h:1/?w=1", "d"),
            "mongodb://h:1/d?w=1"
        );
    }

    #[test]
    fn server_accepts_connections() {
        let uri = test_mongodb_uri();
        let address = uri
            .trim_start_matches("mongodb://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        if using_nx_27017() {
            TcpStream::connect(&address)
                .unwrap_or_else(|error| panic!("connect {address}: {error}"));
        }
        assert!(uri.contains("/sqlarena_test_"), "{uri}");
        assert_ne!(test_mongodb_uri(), uri, "each call names a fresh database");
    }
}
