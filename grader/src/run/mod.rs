//! Executing jobs on top of the sandbox: init jobs build databases and
//! expected results, attempt jobs time and check a student query.

pub mod attempt;
pub mod init;
pub mod report;

pub use attempt::run_attempt;
pub use init::run_init;

use sqlarena_common::Column;

use crate::compare::RowOrder;
use crate::sqltext::{top_level_order_by, OrderKey};

/// Returns how results of `solution` compare: in order (with the ORDER BY
/// columns as tie groups when they can be resolved) when it has a
/// top-level ORDER BY, as multisets otherwise.
pub fn row_order(solution: &str, columns: &[Column]) -> RowOrder {
    let Some(order_by) = top_level_order_by(solution) else {
        return RowOrder::Any;
    };
    let tie_columns = order_by
        .keys
        .and_then(|keys| {
            keys.iter()
                .map(|key| match key {
                    OrderKey::Position(position) => {
                        (1..=columns.len()).contains(position).then(|| position - 1)
                    }
                    OrderKey::Name(name) => {
                        let mut matching =
                            columns.iter().enumerate().filter(|(_, c)| &c.name == name);
                        match (matching.next(), matching.next()) {
                            (Some((index, _)), None) => Some(index),
                            _ => None,
                        }
                    }
                })
                .collect::<Option<Vec<usize>>>()
        })
        .unwrap_or_default();
    RowOrder::Ordered { tie_columns }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                type_name: "int4".into(),
            })
            .collect()
    }

    #[test]
    fn row_order_resolves_order_by_columns() {
        let cols = columns(&["id", "name"]);
        assert_eq!(row_order("select id, name from t", &cols), RowOrder::Any);
        assert_eq!(
            row_order("select id, name from t order by name, 1", &cols),
            RowOrder::Ordered {
                tie_columns: vec![1, 0]
            }
        );
        assert_eq!(
            row_order("select id, name from t order by length(name)", &cols),
            RowOrder::Ordered {
                tie_columns: vec![]
            }
        );
        assert_eq!(
            row_order("select id, name from t order by missing", &cols),
            RowOrder::Ordered {
                tie_columns: vec![]
            }
        );
    }
}
