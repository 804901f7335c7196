//! A challenge as files, as `sqlarena challenge push DIR` reads it:
//!
//! ```text
//! DIR/challenge.toml      name, description, type (FE|SE), times_to_run, expires_at
//! DIR/init.sql            the schema
//! DIR/solution.sql        the reference query
//! DIR/cases/NN-visible.sql, DIR/cases/NN-hidden.sql    test data, in NN order
//! ```
//!
//! Anything else in `cases/` is an error rather than silently skipped, so a
//! misnamed case cannot go missing.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use sqlarena_common::ChallengeType;

use super::CliError;

/// `challenge.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "type")]
    challenge_type: ChallengeType,
    times_to_run: u32,
    /// A TOML date-time (`2030-06-01T12:00:00Z`) or a string.
    expires_at: toml::Value,
}

/// One test case file.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFile {
    pub number: u32,
    pub is_visible: bool,
    pub data: String,
}

/// A challenge read from a directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeDir {
    pub name: String,
    pub description: Option<String>,
    pub challenge_type: ChallengeType,
    pub times_to_run: u32,
    pub expires_at: String,
    pub init: String,
    pub solution: String,
    pub cases: Vec<CaseFile>,
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", path.display())))
}

/// Parses a case file name: `NN-visible.sql` or `NN-hidden.sql`.
fn parse_case_name(file_name: &str) -> Option<(u32, bool)> {
    let stem = file_name.strip_suffix(".sql")?;
    let (number, kind) = stem.split_once('-')?;
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let is_visible = match kind {
        "visible" => true,
        "hidden" => false,
        _ => return None,
    };
    Some((number.parse().ok()?, is_visible))
}

impl ChallengeDir {
    /// Reads and checks a challenge directory.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the file that is missing or wrong.
    pub fn load(dir: &Path) -> Result<ChallengeDir, CliError> {
        if !dir.is_dir() {
            return Err(CliError::Usage(format!(
                "{} is not a directory (expected challenge.toml, init.sql, solution.sql and cases/)",
                dir.display()
            )));
        }
        let manifest_path = dir.join("challenge.toml");
        let manifest: Manifest = toml::from_str(&read(&manifest_path)?)
            .map_err(|error| CliError::Usage(format!("{}: {error}", manifest_path.display())))?;
        let expires_at = match manifest.expires_at {
            toml::Value::String(text) => text,
            toml::Value::Datetime(at) => at.to_string(),
            other => {
                return Err(CliError::Usage(format!(
                    "{}: expires_at must be a date and time like 2030-06-01T12:00:00Z, not {other}",
                    manifest_path.display()
                )))
            }
        };
        let cases_dir = dir.join("cases");
        let entries = std::fs::read_dir(&cases_dir).map_err(|error| {
            CliError::Usage(format!(
                "cannot read {}: {error} (test cases go in cases/NN-visible.sql or cases/NN-hidden.sql)",
                cases_dir.display()
            ))
        })?;
        let mut cases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| {
                CliError::Usage(format!("cannot read {}: {error}", cases_dir.display()))
            })?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let path: PathBuf = entry.path();
            let (number, is_visible) = parse_case_name(&file_name).ok_or_else(|| {
                CliError::Usage(format!(
                    "{}: test case files are named NN-visible.sql or NN-hidden.sql (NN a number)",
                    path.display()
                ))
            })?;
            if let Some(other) = cases.iter().find(|case: &&CaseFile| case.number == number) {
                return Err(CliError::Usage(format!(
                    "{}: two test cases numbered {number} ({} and this one)",
                    cases_dir.display(),
                    if other.is_visible {
                        "visible"
                    } else {
                        "hidden"
                    }
                )));
            }
            cases.push(CaseFile {
                number,
                is_visible,
                data: read(&path)?,
            });
        }
        if cases.is_empty() {
            return Err(CliError::Usage(format!(
                "{} has no test cases (cases/01-visible.sql, cases/02-hidden.sql, ...)",
                cases_dir.display()
            )));
        }
        cases.sort_by_key(|case| case.number);
        Ok(ChallengeDir {
            name: manifest.name.trim().to_string(),
            description: manifest.description,
            challenge_type: manifest.challenge_type,
            times_to_run: manifest.times_to_run,
            expires_at,
            init: read(&dir.join("init.sql"))?,
            solution: read(&dir.join("solution.sql"))?,
            cases,
        })
    }

    fn test_cases(&self) -> Value {
        Value::Array(
            self.cases
                .iter()
                .map(|case| json!({"data": case.data, "is_visible": case.is_visible}))
                .collect(),
        )
    }

    /// The body of `POST /challenges`.
    pub fn create_body(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "type": self.challenge_type,
            "init": self.init,
            "solution": self.solution,
            "times_to_run": self.times_to_run,
            "expires_at": self.expires_at,
            "test_cases": self.test_cases(),
        })
    }

    /// The body of `PATCH /challenges/:id`: every field, so the server holds
    /// what the directory says (a missing description removes it). The
    /// server makes a new version only when the SQL or test cases differ.
    pub fn update_body(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description.clone().unwrap_or_default(),
            "init": self.init,
            "solution": self.solution,
            "times_to_run": self.times_to_run,
            "expires_at": self.expires_at,
            "test_cases": self.test_cases(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn sample(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sqlarena-challenge-dir-{label}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        write(
            &dir,
            "challenge.toml",
            "name = \" Totals \"\ntype = \"SE\"\ntimes_to_run = 3\nexpires_at = 2099-12-31T23:59:59Z\n",
        );
        write(&dir, "init.sql", "CREATE TABLE t (a int);");
        write(&dir, "solution.sql", "SELECT a FROM t");
        write(&dir, "cases/10-hidden.sql", "INSERT INTO t VALUES (10);");
        write(&dir, "cases/2-visible.sql", "INSERT INTO t VALUES (2);");
        dir
    }

    #[test]
    fn a_directory_becomes_a_challenge_with_cases_in_number_order() {
        let dir = sample("ok");
        let challenge = ChallengeDir::load(&dir).unwrap();
        assert_eq!(challenge.name, "Totals");
        assert_eq!(challenge.challenge_type, ChallengeType::SE);
        assert_eq!(challenge.expires_at, "2099-12-31T23:59:59Z");
        let numbers: Vec<(u32, bool)> = challenge
            .cases
            .iter()
            .map(|case| (case.number, case.is_visible))
            .collect();
        assert_eq!(numbers, vec![(2, true), (10, false)]);
        let body = challenge.create_body();
        assert_eq!(body["type"], "SE");
        assert_eq!(body["test_cases"][1]["is_visible"], false);
        assert_eq!(challenge.update_body()["description"], "");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn misnamed_cases_unknown_keys_and_missing_files_are_refused() {
        let dir = sample("bad-case");
        write(&dir, "cases/03-visibel.sql", "");
        let error = ChallengeDir::load(&dir).unwrap_err().to_string();
        assert!(error.contains("03-visibel.sql"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();

        let dir = sample("bad-key");
        write(
            &dir,
            "challenge.toml",
            "name = \"x\"\ntype = \"FE\"\ntimes_to_run = 3\nexpires_at = \"2099-01-01T00:00\"\nexpiry = 1\n",
        );
        let error = ChallengeDir::load(&dir).unwrap_err().to_string();
        assert!(error.contains("expiry"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();

        let dir = sample("no-solution");
        std::fs::remove_file(dir.join("solution.sql")).unwrap();
        let error = ChallengeDir::load(&dir).unwrap_err().to_string();
        assert!(error.contains("solution.sql"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
