//! The schema version of a MongoDB store (a `meta` document), and
//! `coordinator migrate --check` on one. MongoDB needs no table changes:
//! a migration is creating the indexes that are missing and filling what a
//! new version reads (both idempotent, at every connect); the version says
//! which release last did it, and a newer one is refused.

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use mongodb::bson::doc;
use mongodb::error::ErrorKind;

use super::{backend, wanted_indexes, Fields, MongoStore};
use crate::store::migration::MigrationReport;
use crate::store::StoreResult;

/// Version 1: every store made before versions were recorded; version 2:
/// the assessment collections and their indexes.
pub const SCHEMA_VERSION: i64 = 2;

const META: &str = "meta";
const SCHEMA_DOCUMENT: &str = "schema";

async fn stored_version(store: &MongoStore) -> StoreResult<Option<i64>> {
    let document = store
        .collection(META)
        .find_one(doc! { "_id": SCHEMA_DOCUMENT })
        .await
        .map_err(backend)?;
    document
        .map(|document| Fields::new(&document, "schema").i64("version"))
        .transpose()
}

/// Refuses a database written by a newer release.
pub(super) async fn refuse_newer(store: &MongoStore) -> anyhow::Result<()> {
    if let Some(version) = stored_version(store).await? {
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "the store has schema version {version}, newer than this coordinator's \
                 {SCHEMA_VERSION}: run a newer coordinator"
            );
        }
    }
    Ok(())
}

/// Records that this release's migration is done.
pub(super) async fn record_version(store: &MongoStore) -> anyhow::Result<()> {
    if stored_version(store).await? >= Some(SCHEMA_VERSION) {
        return Ok(());
    }
    store
        .collection(META)
        .update_one(
            doc! { "_id": SCHEMA_DOCUMENT },
            doc! { "$set": { "version": SCHEMA_VERSION } },
        )
        .upsert(true)
        .await
        .context("recording the schema version")?;
    Ok(())
}

/// Reports what connecting to the store at `uri` would migrate (the
/// version and the missing indexes), changing nothing.
///
/// # Errors
/// Fails when the server does not answer or the store is newer.
pub async fn check_migration(uri: &str) -> anyhow::Result<MigrationReport> {
    let store = MongoStore::connect_unmigrated(uri).await?;
    refuse_newer(&store).await?;
    let mut from = stored_version(&store).await?;
    let collections = store.database.list_collection_names().await?;
    if from.is_none() && collections.iter().any(|name| name != META) {
        from = Some(1);
    }
    let mut changes = Vec::new();
    for (collection, keys, options) in wanted_indexes() {
        let existing: Vec<mongodb::IndexModel> = if collections.iter().any(|c| c == collection) {
            match store.collection(collection).list_indexes().await {
                Ok(cursor) => cursor.try_collect().await?,
                Err(error) if matches!(error.kind.as_ref(), ErrorKind::Command(c) if c.code == 26) => {
                    Vec::new()
                }
                Err(error) => return Err(error.into()),
            }
        } else {
            Vec::new()
        };
        if !existing.iter().any(|index| index.keys == keys) {
            let unique = options.and_then(|options| options.unique) == Some(true);
            changes.push(format!(
                "+ index {collection} {keys}{}",
                if unique { " (unique)" } else { "" }
            ));
        }
    }
    if from != Some(SCHEMA_VERSION) {
        changes.push(format!(
            "~ {META}.{SCHEMA_DOCUMENT}: version {SCHEMA_VERSION}"
        ));
    }
    Ok(MigrationReport {
        from,
        to: SCHEMA_VERSION,
        changes,
    })
}
