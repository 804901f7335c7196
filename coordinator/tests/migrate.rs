//! `coordinator migrate [--check]` and `coordinator backup` on a store file
//! written by the previous schema (version 5, before assessments): the
//! check reports the assessment tables and changes nothing, the backup keeps
//! the old version, the migration adds the tables and keeps every row.

use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::Connection;
use sqlarena_common::Role;
use sqlarena_coordinator::store::sqlite::SqliteStore;
use sqlarena_coordinator::store::{NewUser, UserStore};
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
    assert!(report.contains("schema version 5 -> 12"), "{report}");
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
    assert!(output.contains("schema version 5 -> 12"), "{output}");
    assert_eq!(version(&path), 12);
    assert_eq!(user_count(&path), 3, "every row is kept");
    let (ok, report) = coordinator(&["migrate", "--store", &uri, "--check"]);
    assert!(ok && report.contains("up to date"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On MongoDB: `migrate --check` lists the missing indexes (the
/// assessment ones among them) of a database that predates them and
/// changes nothing; connecting creates them and records the version, after
/// which the check finds nothing to do; a newer version is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_checks_and_versions_a_mongodb_store() {
    use sqlarena_coordinator::store::mongo::{maintenance, MongoStore};
    let uri = sqlarena_e2e::mongo::test_mongodb_uri();
    // A store of the previous release: data, no version, no assessment indexes.
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let database = client.default_database().unwrap();
    database
        .collection::<mongodb::bson::Document>("users")
        .insert_one(mongodb::bson::doc! { "_id": 1_i64, "email_lower": "old@example.com" })
        .await
        .unwrap();

    let (ok, report) = coordinator(&["migrate", "--store", &uri, "--check"]);
    assert!(ok, "{report}");
    assert!(report.contains("schema version 1 -> 2"), "{report}");
    assert!(
        report.contains("+ index assessment_sessions") && report.contains("(unique)"),
        "{report}"
    );
    let collections = database.list_collection_names().await.unwrap();
    assert!(
        !collections
            .iter()
            .any(|name| name == "assessment_sessions" || name == "meta"),
        "--check changes nothing: {collections:?}"
    );

    let store = MongoStore::connect(&uri).await.unwrap();
    let report = maintenance::check_migration(&uri).await.unwrap();
    assert_eq!(report.from, Some(2));
    assert!(report.changes.is_empty(), "{report}");
    drop(store);
    let users = database
        .collection::<mongodb::bson::Document>("users")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap();
    assert_eq!(users, 1, "the data is kept");
    database
        .collection::<mongodb::bson::Document>("meta")
        .update_one(
            mongodb::bson::doc! { "_id": "schema" },
            mongodb::bson::doc! { "$set": { "version": 99_i64 } },
        )
        .await
        .unwrap();
    let error = format!("{:#}", MongoStore::connect(&uri).await.unwrap_err());
    assert!(error.contains("schema version 99"), "{error}");
}
