//! The kept login: `credentials.toml` in the user's config directory, readable
//! by its owner only (the directory 0700, the file 0600).
//!
//! The directory is `$SQLARENA_CONFIG_DIR`, else `$XDG_CONFIG_HOME/sqlarena`,
//! else `~/.config/sqlarena`.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CliError;

/// Name of the file that holds the login.
const FILE_NAME: &str = "credentials.toml";

/// A login to one coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    /// The coordinator's root URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The bearer token from `POST /login`.
    pub token: String,
    pub user_id: i64,
    pub email: String,
    pub role: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Returns the directory that holds the login.
///
/// # Errors
/// When neither `SQLARENA_CONFIG_DIR`, `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn config_dir() -> Result<PathBuf, CliError> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = from_env("SQLARENA_CONFIG_DIR") {
        return Ok(dir);
    }
    if let Some(dir) = from_env("XDG_CONFIG_HOME") {
        return Ok(dir.join("sqlarena"));
    }
    if let Some(home) = from_env("HOME") {
        return Ok(home.join(".config").join("sqlarena"));
    }
    Err(CliError::Usage(
        "no config directory: set SQLARENA_CONFIG_DIR (or HOME)".into(),
    ))
}

/// Returns the path of the credentials file.
///
/// # Errors
/// As [`config_dir`].
pub fn path() -> Result<PathBuf, CliError> {
    Ok(config_dir()?.join(FILE_NAME))
}

/// Reads the kept login.
///
/// # Errors
/// [`CliError::Auth`] when there is none; [`CliError::Usage`] when the file
/// cannot be read or parsed.
pub fn load() -> Result<Credentials, CliError> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::Auth(
                "not logged in: run `sqlarena login URL` first".into(),
            ))
        }
        Err(error) => {
            return Err(CliError::Usage(format!(
                "cannot read {}: {error}",
                path.display()
            )))
        }
    };
    toml::from_str(&text).map_err(|error| {
        CliError::Usage(format!(
            "{} is damaged ({error}); run `sqlarena login URL` again",
            path.display()
        ))
    })
}

/// Writes the login, replacing any other, readable by the owner only.
///
/// # Errors
/// [`CliError::Usage`] when the directory or file cannot be written.
pub fn save(credentials: &Credentials) -> Result<PathBuf, CliError> {
    let dir = config_dir()?;
    let failed = |what: &str, error: std::io::Error| {
        CliError::Usage(format!("cannot {what} in {}: {error}", dir.display()))
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|error| failed("create the config directory", error))?;
    let text = toml::to_string(credentials)
        .map_err(|error| CliError::Usage(format!("cannot encode the credentials: {error}")))?;
    let final_path = dir.join(FILE_NAME);
    let temporary = dir.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|error| failed("write the credentials", error))?;
    // The mode above is filtered by the umask; make sure it is exactly 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|error| failed("write the credentials", error))?;
    std::fs::rename(&temporary, &final_path)
        .map_err(|error| failed("write the credentials", error))?;
    Ok(final_path)
}

/// Deletes the kept login; returns false when there was none.
///
/// # Errors
/// [`CliError::Usage`] when the file exists but cannot be removed.
pub fn remove() -> Result<bool, CliError> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(CliError::Usage(format!(
            "cannot remove {}: {error}",
            path.display()
        ))),
    }
}
