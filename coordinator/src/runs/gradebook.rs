//! A run's gradebook: one CSV row per item (student), read page by page
//! from the store.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::store::runs::Run;
use crate::store::{Store, StoreResult};

/// The gradebook's header.
pub const HEADER: &str = "user_id,full_name,email,state,status,score,execution_ms,ratio,\
attempt_id,attempt_created_at,note";

/// Items read per store call.
const PAGE: u32 = 1000;

/// Builds the gradebook of `run` as CSV text.
///
/// # Errors
/// Store failures.
pub async fn build(store: &dyn Store, run: &Run) -> StoreResult<String> {
    let mut csv = String::from(HEADER);
    csv.push('\n');
    let mut users = HashMap::new();
    let mut after = None;
    loop {
        let items = store.list_run_items(run.id, None, after, PAGE).await?;
        let Some(last) = items.last() else {
            break;
        };
        after = Some(last.item);
        for item in &items {
            if let Entry::Vacant(entry) = users.entry(item.user_id.0) {
                entry.insert(store.get_user(item.user_id).await?);
            }
            let user = users.get(&item.user_id.0).and_then(Option::as_ref);
            let attempt = match item.attempt_id {
                Some(id) => store.get_attempt(id).await?,
                None => None,
            };
            let number =
                |value: Option<f64>| value.map(|value| format!("{value}")).unwrap_or_default();
            let note = item
                .note
                .clone()
                .or_else(|| item.result.error.clone())
                .unwrap_or_default();
            let fields = [
                item.user_id.to_string(),
                user.map(|user| user.full_name.clone()).unwrap_or_default(),
                user.map(|user| user.email.clone()).unwrap_or_default(),
                item.state.to_string(),
                item.result
                    .status
                    .map(|status| status.to_string())
                    .unwrap_or_default(),
                number(item.result.score),
                number(item.result.execution_ms),
                number(item.result.ratio),
                item.attempt_id.map(|id| id.to_string()).unwrap_or_default(),
                attempt
                    .map(|attempt| attempt.created_at.to_rfc3339())
                    .unwrap_or_default(),
                note,
            ];
            let row: Vec<String> = fields.iter().map(|field| quote(field)).collect();
            csv.push_str(&row.join(","));
            csv.push('\n');
        }
    }
    Ok(csv)
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
    use super::quote;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("=1+1"), "'=1+1");
        assert_eq!(quote("-2.5"), "-2.5");
    }
}
