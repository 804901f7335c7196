//! Rows as an export writes them: typed cells, formatted as a CSV line
//! (RFC 4180, formulas defused) or a JSON object per line.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlarena_common::exports::ExportFormat;

/// One cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Number(f64),
    Text(String),
}

impl Cell {
    /// A text cell, or null.
    pub fn text(value: Option<impl Into<String>>) -> Cell {
        value.map_or(Cell::Null, |value| Cell::Text(value.into()))
    }

    /// A number cell, or null.
    pub fn number(value: Option<f64>) -> Cell {
        value.map_or(Cell::Null, Cell::Number)
    }

    /// An integer cell, or null.
    pub fn int(value: Option<i64>) -> Cell {
        value.map_or(Cell::Null, Cell::Int)
    }

    /// A time (RFC 3339) cell, or null.
    pub fn time(value: Option<DateTime<Utc>>) -> Cell {
        Cell::text(value.map(|time| time.to_rfc3339()))
    }

    fn csv(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(value) => value.to_string(),
            Cell::Number(value) => format!("{value}"),
            Cell::Text(text) => quote(text),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(value) => Value::from(*value),
            Cell::Number(value) => Value::from(*value),
            Cell::Text(text) => Value::from(text.as_str()),
        }
    }
}

/// Appends the file's header to `out`: the CSV header line (nothing for
/// JSON lines, whose rows name their fields).
pub fn write_header(out: &mut Vec<u8>, format: ExportFormat, columns: &[String]) {
    if format == ExportFormat::Csv {
        let names: Vec<String> = columns.iter().map(|name| quote(name)).collect();
        out.extend_from_slice(names.join(",").as_bytes());
        out.push(b'\n');
    }
}

/// Appends one row to `out`, its cells in the order of `columns`.
pub fn write_row(out: &mut Vec<u8>, format: ExportFormat, columns: &[String], row: &[Cell]) {
    match format {
        ExportFormat::Csv => {
            let cells: Vec<String> = row.iter().map(Cell::csv).collect();
            out.extend_from_slice(cells.join(",").as_bytes());
        }
        ExportFormat::Jsonl => {
            let object: Map<String, Value> = columns
                .iter()
                .zip(row)
                .map(|(name, cell)| (name.clone(), cell.json()))
                .collect();
            // A map of plain values always serializes.
            let _ = serde_json::to_writer(&mut *out, &object);
        }
    }
    out.push(b'\n');
}

/// Quotes a CSV field when it needs it (RFC 4180), and defuses a leading
/// formula character so a spreadsheet shows text, not a formula.
fn quote(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@']) && field.parse::<f64>().is_err() {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("=1+1"), "'=1+1");
        assert_eq!(quote("-2.5"), "-2.5");
    }

    #[test]
    fn rows_are_csv_lines_or_json_objects() {
        let columns = vec!["id".to_string(), "name".to_string(), "score".to_string()];
        let row = [Cell::Int(7), Cell::Text("O'Neil, A".into()), Cell::Null];
        let mut csv = Vec::new();
        write_header(&mut csv, ExportFormat::Csv, &columns);
        write_row(&mut csv, ExportFormat::Csv, &columns, &row);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "id,name,score\n7,\"O'Neil, A\",\n"
        );
        let mut jsonl = Vec::new();
        write_header(&mut jsonl, ExportFormat::Jsonl, &columns);
        write_row(&mut jsonl, ExportFormat::Jsonl, &columns, &row);
        assert_eq!(
            String::from_utf8(jsonl).unwrap(),
            "{\"id\":7,\"name\":\"O'Neil, A\",\"score\":null}\n"
        );
    }
}
