//! The embedded SQLite store: the conformance suite on a fresh file per
//! test, plus what only a file-backed store has (the lock, reopening).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use sqlarena_common::{Role, UserId};
use sqlarena_coordinator::store::sqlite::SqliteStore;
use sqlarena_coordinator::store::{NewUser, Store, UserStore};
use uuid::Uuid;

/// Returns a path for a new store file in its own temporary directory.
fn fresh_path() -> PathBuf {
    std::env::temp_dir()
        .join(format!("sqlarena-store-{}", Uuid::new_v4().simple()))
        .join("store.db")
}

/// Opens a fresh, empty store in a new temporary directory.
async fn fresh_store() -> Arc<dyn Store> {
    let path = fresh_path();
    Arc::new(
        SqliteStore::open(path.to_str().expect("utf-8 temp path"))
            .expect("open a fresh sqlite store"),
    )
}

sqlarena_coordinator::store_conformance_suite!(fresh_store);
sqlarena_coordinator::assessment_store_conformance_suite!(fresh_store);
sqlarena_coordinator::store_runs_conformance_suite!(fresh_store);
sqlarena_coordinator::store_affinity_conformance_suite!(fresh_store);
sqlarena_coordinator::store_exports_conformance_suite!(fresh_store);
sqlarena_coordinator::store_audit_conformance_suite!(fresh_store);
sqlarena_coordinator::console_store_conformance_suite!(fresh_store);

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused() {
    let path = fresh_path();
    let location = path.to_str().unwrap().to_owned();
    let first = SqliteStore::open(&location).expect("first open");
    let error = SqliteStore::open(&location)
        .expect_err("a second open must fail")
        .to_string();
    assert!(
        error.contains(&format!("{location}.lock")),
        "the message names the lock file: {error}"
    );
    assert!(
        error.contains("another coordinator"),
        "the message says why: {error}"
    );
    drop(first);
    SqliteStore::open(&location).expect("the lock is released when the store is dropped");
}

#[tokio::test]
async fn data_survives_reopening() {
    let path = fresh_path();
    let location = format!("{}?synchronous=full", path.display());
    let store = SqliteStore::open(&location).expect("open");
    let user = store
        .create_user(NewUser {
            email: "Grace@Example.com".into(),
            full_name: "Grace Hopper".into(),
            role: Role::Admin,
            password_hash: "hash".into(),
        })
        .await
        .unwrap();
    drop(store);

    let reopened = SqliteStore::open(&location).expect("reopen");
    assert_eq!(
        reopened.get_user(user.id).await.unwrap(),
        Some(user.clone())
    );
    let next = reopened
        .create_user(NewUser {
            email: "ada@example.com".into(),
            full_name: "Ada".into(),
            role: Role::Student,
            password_hash: "hash".into(),
        })
        .await
        .unwrap();
    assert!(next.id > user.id, "ids keep increasing after a reopen");
}

#[tokio::test]
async fn bad_locations_are_refused_clearly() {
    let path = fresh_path();
    let error = SqliteStore::open(&format!("{}?journal=off", path.display()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("synchronous"), "{error}");
    assert!(!path.exists(), "nothing is created for a refused location");

    let not_a_database = fresh_path();
    std::fs::create_dir_all(not_a_database.parent().unwrap()).unwrap();
    std::fs::write(
        &not_a_database,
        b"this is not a sqlite database, just some text that is long enough",
    )
    .unwrap();
    let error = format!(
        "{:#}",
        SqliteStore::open(not_a_database.to_str().unwrap()).unwrap_err()
    );
    assert!(
        error.contains(not_a_database.to_str().unwrap()),
        "the message names the file: {error}"
    );
}

#[tokio::test]
async fn the_store_uri_selects_sqlite() {
    let path = fresh_path();
    let store = sqlarena_coordinator::store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    store.ping().await.expect("ping");
    assert!(path.exists(), "the file is created");
}

/// Set in the child process of [`acknowledged_writes_survive_sigkill`]: the
/// store location it writes to until it is killed.
const KILL_CHILD_ENV: &str = "SQLARENA_TEST_SQLITE_KILL_CHILD";

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    if let Ok(location) = std::env::var(KILL_CHILD_ENV) {
        // The child: create users until killed, reporting each acknowledged id.
        let store = SqliteStore::open(&location).expect("child opens the store");
        for index in 0u64.. {
            let user = store
                .create_user(NewUser {
                    email: format!("user{index}@example.com"),
                    full_name: format!("User {index}"),
                    role: Role::Student,
                    password_hash: "hash".into(),
                })
                .await
                .expect("child writes");
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "acknowledged {}", user.id).unwrap();
            stdout.flush().unwrap();
        }
        unreachable!("the child writes until it is killed");
    }

    let path = fresh_path();
    let location = path.to_str().unwrap().to_owned();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "acknowledged_writes_survive_sigkill",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_ENV, &location)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer process");
    let mut acknowledged = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("acknowledged ") {
            acknowledged.push(id.parse::<i64>().unwrap());
            if acknowledged.len() == 200 {
                break;
            }
        }
    }
    assert_eq!(
        acknowledged.len(),
        200,
        "the writer process acknowledged writes before dying on its own"
    );
    child.kill().expect("SIGKILL the writer");
    child.wait().unwrap();

    let store = SqliteStore::open(&location).expect("the lock of a killed process is released");
    for id in acknowledged {
        let user = store.get_user(UserId(id)).await.unwrap();
        assert!(user.is_some(), "acknowledged user {id} survived SIGKILL");
    }
}
