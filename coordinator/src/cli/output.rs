//! Printing: JSON for scripts, aligned tables and summaries for people.
//! Strings print without JSON quotes; missing values print as `-`.

use serde_json::Value;

/// Writes `text` to standard output. A closed pipe (`sqlarena ... | head`)
/// is not an error worth a panic: the rest is dropped.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::emit(&format!($($arg)*)) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {out, outln};

/// Prints `value` as indented JSON on standard output.
pub fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// A value as text: strings without quotes, null as empty.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A value as text, or `-` when it is missing or empty.
pub fn or_dash(value: &Value) -> String {
    match text(value) {
        shown if shown.is_empty() => "-".into(),
        shown => shown,
    }
}

/// A number with `digits` decimals, or `-`.
pub fn number(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map(|n| format!("{n:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// Formats `rows` under `headers`, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|header| header.to_string()).collect());
    out.push_str(&line(
        widths.iter().map(|width| "-".repeat(*width)).collect(),
    ));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// Indents every line of `body` by four spaces.
pub fn indented(body: &str) -> String {
    body.trim_end()
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect()
}

/// An attempt as people read it: status, query, one row per test case, then
/// each case's full failure detail (never cut).
pub fn attempt(attempt: &Value) -> String {
    let mut out = format!(
        "attempt {} on challenge {} (version {}) by user {}: {}\n",
        attempt["id"],
        attempt["challenge_id"],
        attempt["challenge_version"],
        attempt["user_id"],
        or_dash(&attempt["status"])
    );
    if let Some(error) = attempt["error"].as_str() {
        out.push_str(&format!("error: {error}\n"));
    }
    out.push_str("query:\n");
    out.push_str(&indented(&text(&attempt["query"])));
    let cases = attempt["attempts"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|case| {
            vec![
                case["test_case_id"].to_string(),
                if case["is_visible"].as_bool().unwrap_or(false) {
                    "visible".into()
                } else {
                    "hidden".into()
                },
                or_dash(&case["status"]),
                number(&case["execution_ms"], 3),
                number(&case["reference_ms"], 3),
                number(&case["ratio"], 2),
            ]
        })
        .collect();
    out.push_str(&table(
        &["case", "shown", "status", "ms", "ref ms", "ratio"],
        &rows,
    ));
    for case in &cases {
        let detail = case["diff"].as_str().or(case["error"].as_str());
        if let Some(detail) = detail {
            out.push_str(&format!("case {}:\n", case["test_case_id"]));
            out.push_str(&indented(detail));
        }
    }
    out
}

/// A challenge with its test cases, init errors and leaderboard.
pub fn challenge(challenge: &Value) -> String {
    let mut out = format!(
        "challenge {} \"{}\" ({}, version {}): {}\n",
        challenge["id"],
        text(&challenge["name"]),
        or_dash(&challenge["type"]),
        challenge["version"],
        or_dash(&challenge["state"])
    );
    out.push_str(&format!(
        "expires {}; timed {} times per case; created by user {}\n",
        or_dash(&challenge["expires_at"]),
        challenge["times_to_run"],
        challenge["created_user_id"]
    ));
    if let Some(description) = challenge["description"].as_str() {
        out.push_str(&indented(description));
    }
    for (label, key) in [
        ("init error", "init_errors"),
        ("init warning", "init_warnings"),
    ] {
        for message in challenge[key].as_array().into_iter().flatten() {
            out.push_str(&format!("{label}: {}\n", text(message)));
        }
    }
    let cases = challenge["test_cases"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let visible = cases
        .iter()
        .filter(|case| case["is_visible"].as_bool().unwrap_or(false))
        .count();
    out.push_str(&format!(
        "test cases: {} ({visible} visible, {} hidden)\n",
        cases.len(),
        cases.len() - visible
    ));
    if let Some(entries) = challenge["top_attempts"].as_array() {
        let rule = if challenge["type"] == "SE" {
            "SE: highest wins"
        } else {
            "FE: lowest wins"
        };
        out.push_str(&format!(
            "leaderboard (score: geometric mean of the cases' time ratios to the reference; {rule})\n"
        ));
        if entries.is_empty() {
            out.push_str("  no passing attempt yet\n");
        } else {
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|entry| {
                    vec![
                        entry["rank"].to_string(),
                        text(&entry["user_full_name"]),
                        entry["attempt_id"].to_string(),
                        number(&entry["score"], 3),
                        number(&entry["completion_time_ms"], 3),
                        or_dash(&entry["time_of_attempt"]),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "rank",
                    "student",
                    "attempt",
                    "score",
                    "total ms",
                    "submitted",
                ],
                &rows,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_strings_lose_their_quotes() {
        let shown = table(
            &["id", "state"],
            &[
                vec!["1".into(), text(&json!("READY"))],
                vec!["10".into(), or_dash(&Value::Null)],
            ],
        );
        assert_eq!(shown, "  id  state\n  --  -----\n  1   READY\n  10  -\n");
    }

    #[test]
    fn an_attempt_shows_every_case_and_the_whole_detail() {
        let long = "row 1: expected (\"customer 7\", 412.50) ".repeat(5);
        let shown = attempt(&json!({
            "id": 7, "challenge_id": 3, "challenge_version": 2, "user_id": 5,
            "status": "FAILED", "error": null, "query": "SELECT 1",
            "attempts": [
                {"test_case_id": 1, "is_visible": true, "status": "FAILED",
                 "execution_ms": 1.5, "reference_ms": 1.0, "ratio": 1.5, "diff": long},
                {"test_case_id": 2, "is_visible": false, "status": "PASSED",
                 "execution_ms": null, "reference_ms": null, "ratio": null, "error": null},
            ]
        }));
        assert!(shown.starts_with("attempt 7 on challenge 3 (version 2) by user 5: FAILED\n"));
        assert!(shown.contains("    SELECT 1\n"));
        assert!(shown.contains("  1     visible  FAILED  1.500  1.000   1.50\n"));
        assert!(shown.contains("  2     hidden   PASSED  -      -       -\n"));
        assert!(shown.contains(long.trim_end()), "detail was cut: {shown}");
    }
}
