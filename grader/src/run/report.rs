//! Keeping what a job posts within the coordinator's body limit.
//!
//! An attempt's outcome carries, per case, the first rows of the student's
//! result and a diff for display; both are cut to the case's share of
//! [`POST_BUDGET`], long values clipped with a note. An init job's expected
//! results cannot be cut (attempts are compared against them), so a
//! reference whose results do not fit is the professor's error.

use serde_json::Value;
use sqlarena_common::QueryResult;

/// Most bytes of results one post carries: half the coordinator's default
/// body limit (2 MiB), leaving room for everything else in the post.
pub const POST_BUDGET: usize = 1 << 20;

/// Rows of a student's result kept for display.
const SHOWN_ROWS: usize = 50;

/// The JSON size of a value.
fn json_len(value: &impl serde::Serialize) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// Cuts `text` to at most `max` bytes (on a character boundary), saying
/// how much was left out.
pub fn clip(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... ({} more bytes not shown)",
        &text[..end],
        text.len() - end
    )
}

/// Keeps the first rows of a result for display, within `budget` bytes of
/// JSON: at most [`SHOWN_ROWS`] rows, and long text values clipped when a
/// single row would not fit.
pub fn shown(mut result: QueryResult, budget: usize) -> QueryResult {
    result.rows.truncate(SHOWN_ROWS);
    let mut used = json_len(&result.columns);
    let mut kept = 0;
    for row in &mut result.rows {
        let mut size = json_len(row);
        if used + size > budget && kept == 0 {
            let per_cell = (budget.saturating_sub(used) / row.len().max(1) / 2).max(16);
            for cell in row.iter_mut() {
                if let Value::String(text) = cell {
                    *text = clip(std::mem::take(text), per_cell);
                }
            }
            size = json_len(row);
        }
        if used + size > budget {
            break;
        }
        used += size;
        kept += 1;
    }
    result.rows.truncate(kept);
    result
}

/// Returns the size of the expected results when they exceed the budget.
pub fn over_budget(results: &[&QueryResult]) -> Option<usize> {
    let size: usize = results.iter().map(json_len).sum();
    (size > POST_BUDGET).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlarena_common::Column;

    fn result(rows: Vec<Vec<Value>>) -> QueryResult {
        QueryResult {
            columns: vec![Column {
                name: "v".into(),
                type_name: "text".into(),
            }],
            rows,
            ordered: false,
        }
    }

    #[test]
    fn shown_results_fit_their_budget() {
        let rows: Vec<Vec<Value>> = (0..200).map(|i| vec![json!(format!("row {i}"))]).collect();
        let small = shown(result(rows.clone()), 1 << 20);
        assert_eq!(small.rows.len(), 50);
        let tight = shown(result(rows), 200);
        assert!(!tight.rows.is_empty() && tight.rows.len() < 50);
        assert!(json_len(&tight) <= 200 + 64, "{}", json_len(&tight));
    }

    #[test]
    fn one_huge_value_is_clipped_not_dropped() {
        let huge = shown(result(vec![vec![json!("x".repeat(5 << 20))]]), 4096);
        assert_eq!(huge.rows.len(), 1);
        let text = huge.rows[0][0].as_str().unwrap();
        assert!(
            text.len() < 4096 && text.contains("more bytes not shown"),
            "{}",
            text.len()
        );
    }

    #[test]
    fn clipping_respects_character_boundaries() {
        assert_eq!(clip("héllo".into(), 2), "h... (5 more bytes not shown)");
        assert_eq!(clip("short".into(), 10), "short");
    }

    #[test]
    fn oversized_expected_results_are_found() {
        let big = result(vec![vec![json!("y".repeat(POST_BUDGET))]]);
        let small = result(vec![vec![json!("y")]]);
        assert!(over_budget(&[&big]).is_some());
        assert!(over_budget(&[&small, &small]).is_none());
    }
}
