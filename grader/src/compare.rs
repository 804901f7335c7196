//! Compares a student's result with the expected result.
//!
//! Cells are typed JSON values. Columns must match in number and in type
//! family; rows are compared in order only when the reference fixes the
//! order (runs of rows tied on the ORDER BY keys compare as multisets),
//! otherwise as multisets where duplicates count. Numbers compare with a
//! small tolerance; NULL equals only NULL.

use std::cmp::Ordering;

use serde_json::Value;
use sqlarena_common::{Column, QueryResult};

/// Relative tolerance for numeric cells.
const RELATIVE_TOLERANCE: f64 = 1e-9;
/// Absolute tolerance for numeric cells.
const ABSOLUTE_TOLERANCE: f64 = 1e-6;
/// How many differing rows a diff shows at most.
const DIFF_ROWS: usize = 3;

/// A group of PostgreSQL types that compare with each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFamily {
    Number,
    Text,
    Bool,
    DateTime,
    Json,
    /// Any other type; compares only with the same type name.
    Other(String),
}

impl std::fmt::Display for TypeFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeFamily::Number => f.write_str("number"),
            TypeFamily::Text => f.write_str("text"),
            TypeFamily::Bool => f.write_str("boolean"),
            TypeFamily::DateTime => f.write_str("date/time"),
            TypeFamily::Json => f.write_str("json"),
            TypeFamily::Other(name) => f.write_str(name),
        }
    }
}

/// Returns the family of a PostgreSQL type name.
pub fn type_family(type_name: &str) -> TypeFamily {
    match type_name {
        "int2" | "int4" | "int8" | "oid" | "float4" | "float8" | "numeric" | "money" => {
            TypeFamily::Number
        }
        "text" | "varchar" | "bpchar" | "char" | "name" | "unknown" | "citext" => TypeFamily::Text,
        "bool" => TypeFamily::Bool,
        "date" | "time" | "timetz" | "timestamp" | "timestamptz" | "interval" => {
            TypeFamily::DateTime
        }
        "json" | "jsonb" => TypeFamily::Json,
        other => TypeFamily::Other(other.to_string()),
    }
}

/// How to compare rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOrder {
    /// Rows compare as a multiset.
    Any,
    /// Rows compare in order; rows tied on these 0-based columns may be
    /// permuted. Empty keys mean strict order.
    Ordered { tie_columns: Vec<usize> },
}

/// Compares `actual` with `expected`; `Err` carries a short human diff.
///
/// # Errors
///
/// Returns the diff when the results differ.
pub fn compare(
    expected: &QueryResult,
    actual: &QueryResult,
    order: &RowOrder,
) -> Result<(), String> {
    compare_columns(&expected.columns, &actual.columns)?;
    match order {
        RowOrder::Ordered { tie_columns } => compare_ordered(expected, actual, tie_columns),
        RowOrder::Any => compare_multiset(&expected.rows, &actual.rows),
    }
}

/// Checks the column count and each column's type family.
fn compare_columns(expected: &[Column], actual: &[Column]) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!(
            "expected {} column(s), your query returned {}",
            expected.len(),
            actual.len()
        ));
    }
    for (index, (want, got)) in expected.iter().zip(actual).enumerate() {
        let (want_family, got_family) = (type_family(&want.type_name), type_family(&got.type_name));
        if want_family != got_family {
            return Err(format!(
                "column {} (\"{}\") has type {} ({}), expected {} ({})",
                index + 1,
                got.name,
                got.type_name,
                got_family,
                want.type_name,
                want_family
            ));
        }
    }
    Ok(())
}

/// Compares rows in order, allowing permutations inside runs of rows that
/// are equal on `tie_columns`.
fn compare_ordered(
    expected: &QueryResult,
    actual: &QueryResult,
    tie_columns: &[usize],
) -> Result<(), String> {
    if expected.rows.len() != actual.rows.len() {
        return Err(format!(
            "expected {} row(s), your query returned {}",
            expected.rows.len(),
            actual.rows.len()
        ));
    }
    let mut start = 0;
    while start < expected.rows.len() {
        let mut end = start + 1;
        if !tie_columns.is_empty() {
            while end < expected.rows.len()
                && tied(&expected.rows[start], &expected.rows[end], tie_columns)
            {
                end += 1;
            }
        }
        let (want, got) = (&expected.rows[start..end], &actual.rows[start..end]);
        let same = if end - start == 1 {
            rows_equal(&want[0], &got[0])
        } else {
            compare_multiset(want, got).is_ok()
        };
        if !same {
            return Err(format!(
                "rows differ from row {} on (the order matters): expected {}, got {}",
                start + 1,
                render_row(&want[0]),
                render_row(&got[0])
            ));
        }
        start = end;
    }
    Ok(())
}

/// Returns true when two rows are equal on all `columns`.
fn tied(a: &[Value], b: &[Value], columns: &[usize]) -> bool {
    columns.iter().all(|&c| match (a.get(c), b.get(c)) {
        (Some(x), Some(y)) => cells_equal(x, y),
        _ => false,
    })
}

/// Compares rows as multisets (duplicates count).
fn compare_multiset(expected: &[Vec<Value>], actual: &[Vec<Value>]) -> Result<(), String> {
    let mut want: Vec<&Vec<Value>> = expected.iter().collect();
    let mut got: Vec<&Vec<Value>> = actual.iter().collect();
    want.sort_by(|a, b| compare_rows(a, b));
    got.sort_by(|a, b| compare_rows(a, b));
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(w), Some(g)) if rows_equal(w, g) => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(g)) if compare_rows(w, g) == Ordering::Less => {
                missing.push(*w);
                i += 1;
            }
            (Some(_), Some(g)) | (None, Some(g)) => {
                extra.push(*g);
                j += 1;
            }
            (Some(w), None) => {
                missing.push(*w);
                i += 1;
            }
            (None, None) => break,
        }
    }
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut diff = format!(
        "expected {} row(s), your query returned {}: {} missing, {} unexpected",
        expected.len(),
        actual.len(),
        missing.len(),
        extra.len()
    );
    for row in missing.iter().take(DIFF_ROWS) {
        diff.push_str(&format!("\n  missing: {}", render_row(row)));
    }
    for row in extra.iter().take(DIFF_ROWS) {
        diff.push_str(&format!("\n  unexpected: {}", render_row(row)));
    }
    Err(diff)
}

/// Renders a row for a diff.
fn render_row(row: &[Value]) -> String {
    let cells: Vec<String> = row.iter().map(Value::to_string).collect();
    let text = format!("({})", cells.join(", "));
    if text.chars().count() > 200 {
        format!("{}...", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// Returns true when two rows are equal cell by cell.
fn rows_equal(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| cells_equal(x, y))
}

/// Returns true when two cells are equal: numbers within tolerance, NULL
/// only with NULL, everything else exactly.
pub fn cells_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => numbers_close(x, y),
            _ => x == y,
        },
        _ => a == b,
    }
}

/// Returns true when two numbers agree within the tolerances.
fn numbers_close(x: f64, y: f64) -> bool {
    let difference = (x - y).abs();
    difference <= ABSOLUTE_TOLERANCE || difference <= RELATIVE_TOLERANCE * x.abs().max(y.abs())
}

/// A total order on rows, used to sort before a multiset comparison.
fn compare_rows(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = compare_cells(x, y);
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// A total order on cells: null < bool < number < string < other.
fn compare_cells(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x.total_cmp(&y)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            a.to_string().cmp(&b.to_string())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Finds the first pair of adjacent rows that tie on `tie_columns` but
/// differ elsewhere: their order is not fixed by the ORDER BY. Returns the
/// 0-based index of the first row of the pair.
pub fn first_unfixed_tie(rows: &[Vec<Value>], tie_columns: &[usize]) -> Option<usize> {
    rows.windows(2)
        .position(|pair| tied(&pair[0], &pair[1], tie_columns) && !rows_equal(&pair[0], &pair[1]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(types: &[&str], rows: Vec<Vec<Value>>) -> QueryResult {
        QueryResult {
            columns: types
                .iter()
                .enumerate()
                .map(|(i, t)| Column {
                    name: format!("c{i}"),
                    type_name: t.to_string(),
                })
                .collect(),
            rows,
            ordered: false,
        }
    }

    fn ordered() -> RowOrder {
        RowOrder::Ordered {
            tie_columns: vec![],
        }
    }

    #[test]
    fn ordered_comparison_rejects_another_order() {
        let expected = result(&["int4"], vec![vec![json!(1)], vec![json!(2)]]);
        let swapped = result(&["int4"], vec![vec![json!(2)], vec![json!(1)]]);
        assert!(compare(&expected, &expected, &ordered()).is_ok());
        let diff = compare(&expected, &swapped, &ordered()).unwrap_err();
        assert!(diff.contains("row 1"), "{diff}");
        assert!(compare(&expected, &swapped, &RowOrder::Any).is_ok());
    }

    #[test]
    fn ordered_comparison_allows_permuted_ties() {
        let expected = result(
            &["int4", "text"],
            vec![
                vec![json!(1), json!("a")],
                vec![json!(1), json!("b")],
                vec![json!(2), json!("c")],
            ],
        );
        let permuted = result(
            &["int4", "text"],
            vec![
                vec![json!(1), json!("b")],
                vec![json!(1), json!("a")],
                vec![json!(2), json!("c")],
            ],
        );
        let by_first = RowOrder::Ordered {
            tie_columns: vec![0],
        };
        assert!(compare(&expected, &permuted, &by_first).is_ok());
        assert!(compare(&expected, &permuted, &ordered()).is_err());
        let across_runs = result(
            &["int4", "text"],
            vec![
                vec![json!(1), json!("a")],
                vec![json!(2), json!("c")],
                vec![json!(1), json!("b")],
            ],
        );
        assert!(compare(&expected, &across_runs, &by_first).is_err());
    }

    #[test]
    fn multiset_counts_duplicates() {
        let expected = result(
            &["int4"],
            vec![vec![json!(1)], vec![json!(1)], vec![json!(2)]],
        );
        let fewer_duplicates = result(
            &["int4"],
            vec![vec![json!(1)], vec![json!(2)], vec![json!(2)]],
        );
        let diff = compare(&expected, &fewer_duplicates, &RowOrder::Any).unwrap_err();
        assert!(diff.contains("1 missing, 1 unexpected"), "{diff}");
        let shuffled = result(
            &["int4"],
            vec![vec![json!(2)], vec![json!(1)], vec![json!(1)]],
        );
        assert!(compare(&expected, &shuffled, &RowOrder::Any).is_ok());
    }

    #[test]
    fn superset_and_subset_are_wrong() {
        let expected = result(&["int4"], vec![vec![json!(1)], vec![json!(2)]]);
        let superset = result(
            &["int4"],
            vec![vec![json!(1)], vec![json!(2)], vec![json!(3)]],
        );
        let subset = result(&["int4"], vec![vec![json!(1)]]);
        let diff = compare(&expected, &superset, &RowOrder::Any).unwrap_err();
        assert!(
            diff.contains("0 missing, 1 unexpected") && diff.contains("unexpected: (3)"),
            "{diff}"
        );
        let diff = compare(&expected, &subset, &RowOrder::Any).unwrap_err();
        assert!(
            diff.contains("1 missing, 0 unexpected") && diff.contains("missing: (2)"),
            "{diff}"
        );
        assert!(compare(&expected, &superset, &ordered()).is_err());
    }

    #[test]
    fn null_equals_only_null() {
        let null = result(&["text"], vec![vec![Value::Null]]);
        let empty = result(&["text"], vec![vec![json!("")]]);
        let word = result(&["text"], vec![vec![json!("NULL")]]);
        assert!(compare(&null, &null, &RowOrder::Any).is_ok());
        assert!(compare(&null, &empty, &RowOrder::Any).is_err());
        assert!(compare(&null, &word, &RowOrder::Any).is_err());
        assert!(compare(&empty, &word, &ordered()).is_err());
    }

    #[test]
    fn numbers_compare_with_tolerance() {
        let expected = result(&["numeric"], vec![vec![json!(1.0)], vec![json!(1e12)]]);
        let close = result(
            &["float8"],
            vec![vec![json!(1.0000001)], vec![json!(1e12 + 10.0)]],
        );
        let integer = result(
            &["int8"],
            vec![vec![json!(1)], vec![json!(1_000_000_000_000_i64)]],
        );
        let far = result(&["numeric"], vec![vec![json!(1.001)], vec![json!(1e12)]]);
        assert!(compare(&expected, &close, &RowOrder::Any).is_ok());
        assert!(compare(&expected, &integer, &ordered()).is_ok());
        assert!(compare(&expected, &far, &RowOrder::Any).is_err());
    }

    #[test]
    fn column_count_and_family_must_match() {
        let expected = result(&["int4", "text"], vec![vec![json!(1), json!("a")]]);
        let narrower = result(&["int4"], vec![vec![json!(1)]]);
        let diff = compare(&expected, &narrower, &RowOrder::Any).unwrap_err();
        assert!(
            diff.contains("expected 2 column(s), your query returned 1"),
            "{diff}"
        );
        let text_number = result(&["text", "text"], vec![vec![json!("1"), json!("a")]]);
        let diff = compare(&expected, &text_number, &RowOrder::Any).unwrap_err();
        assert!(
            diff.contains("column 1") && diff.contains("number"),
            "{diff}"
        );
        let same_family = result(&["int8", "varchar"], vec![vec![json!(1), json!("a")]]);
        assert!(compare(&expected, &same_family, &RowOrder::Any).is_ok());
    }

    #[test]
    fn finds_ties_the_order_by_does_not_fix() {
        let rows = vec![
            vec![json!(1), json!("a")],
            vec![json!(2), json!("b")],
            vec![json!(2), json!("c")],
        ];
        assert_eq!(first_unfixed_tie(&rows, &[0]), Some(1));
        assert_eq!(first_unfixed_tie(&rows, &[0, 1]), None);
        let duplicates = vec![vec![json!(1), json!("a")], vec![json!(1), json!("a")]];
        assert_eq!(first_unfixed_tie(&duplicates, &[0]), None);
    }
}
