//! `coordinator migrate [--check]` and `coordinator backup` on a store file
//! written by the previous schema (version 5, before assessments): the
//! check reports the assessment tables and changes nothing, the backup keeps
//! the old version, the migration adds the tables and keeps every row.

use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::Connection;
use sqlarena_common::Role;
use sqlarena_coordinator::store::sqlite::SqliteStore;
use sqlarena_coordinator::store::{NewUser, Store};
use uuid::Uuid;

fn coordinator(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .env_remove("SQLARENA_STORE")
        .output()
        .expect("running the coordinator binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .unwrap()
}

fn user_count(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap()
}

#[tokio::test]
async fn migrate_checks_backs_up_and_migrates_a_version_5_store() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sqlarena-migrate-cli-{}", Uuid::new_v4().simple()));
    let path = dir.join("store.db");
    let uri = format!("sqlite://{}", path.display());
    {
        let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        for index in 0..3 {
            store
                .create_user(NewUser {
                    email: format!("old-{index}@example.com"),
                    full_name: "Old".into(),
                    role: Role::Student,
                    password_hash: "$argon2id$hash".into(),
                })
                .await
                .unwrap();
        }
    }
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE score_overrides; DROP TABLE assessment_sessions; \
             DROP TABLE assessments; UPDATE schema_version SET version = 5;",
        )
        .unwrap();

    let (ok, report) = coordinator(&["migrate", "--store", &uri, "--check"]);
    assert!(ok, "{report}");
    assert!(report.contains("schema version 5 -> 6"), "{report}");
    for table in ["assessments", "assessment_sessions", "score_overrides"] {
        assert!(report.contains(&format!("+ table {table}")), "{report}");
    }
    assert!(!report.contains("- "), "nothing is dropped: {report}");
    assert_eq!(version(&path), 5, "--check changes nothing");

    let backup = dir.join("before-6.db");
    let (ok, output) = coordinator(&["backup", "--store", &uri, "--to", backup.to_str().unwrap()]);
    assert!(ok, "{output}");
    assert_eq!(version(&backup), 5, "the backup is of the store as it was");
    assert_eq!(user_count(&backup), 3);
    let (ok, output) = coordinator(&["backup", "--store", &uri, "--to", backup.to_str().unwrap()]);
    assert!(!ok && output.contains("exists already"), "{output}");

    let (ok, output) = coordinator(&["migrate", "--store", &uri]);
    assert!(ok, "{output}");
    assert!(output.contains("schema version 5 -> 6"), "{output}");
    assert_eq!(version(&path), 6);
    assert_eq!(user_count(&path), 3, "every row is kept");
    let (ok, report) = coordinator(&["migrate", "--store", &uri, "--check"]);
    assert!(ok && report.contains("up to date"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
