//! Cursor pagination for every list: `?limit=N&cursor=C`, and
//! `next_cursor` beside `data` in the envelope (null on the last page).
//!
//! A cursor is opaque to clients: it names the list it belongs to and the
//! key of the last entry shown, so a cursor of one list is refused by
//! another, and a cursor that was tampered with is a 400, never a 500.

use std::fmt::Display;
use std::str::FromStr;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlarena_common::{PageEnvelope, SuccessStatus};
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::store::Page;

/// Entries per page when the client names no `limit`.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: u32 = 500;

/// The query string of a list (lists with filters add their own fields
/// and take these two as well).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Entries per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page; absent or empty for the first.
    pub cursor: Option<String>,
}

/// One page asked for by a client, for the list named `list`.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<K> {
    list: &'static str,
    pub after: Option<K>,
    pub limit: u32,
}

impl<K: FromStr + Display + Copy> PageRequest<K> {
    /// Checks `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and
    /// decodes `cursor`, which must come from the list `list`.
    ///
    /// # Errors
    /// `BadRequest` for a limit out of range or a cursor that is not one of
    /// this list's.
    pub fn new(
        list: &'static str,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> ApiResult<PageRequest<K>> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(limit) => u32::try_from(limit)
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "limit: {limit} is out of range; give 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"
                    ))
                })?,
        };
        let after = match cursor.filter(|cursor| !cursor.is_empty()) {
            None => None,
            Some(cursor) => Some(decode(list, cursor).ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor: not a cursor of this list; pass the next_cursor of its previous page"
                        .into(),
                )
            })?),
        };
        Ok(PageRequest { list, after, limit })
    }

    /// From [`PageParams`].
    ///
    /// # Errors
    /// As [`PageRequest::new`].
    pub fn from_params(list: &'static str, params: &PageParams) -> ApiResult<PageRequest<K>> {
        PageRequest::new(list, params.limit, params.cursor.as_deref())
    }

    /// What to ask the store for: one entry more than the page, to learn
    /// whether another page follows.
    pub fn store_page(&self) -> Page<K> {
        Page {
            after: self.after,
            limit: self.limit + 1,
        }
    }

    /// Cuts what the store returned for [`PageRequest::store_page`] to the
    /// page and returns it with the cursor of the next page, if any.
    pub fn finish<T>(
        &self,
        mut entries: Vec<T>,
        key: impl Fn(&T) -> K,
    ) -> (Vec<T>, Option<String>) {
        let limit = self.limit as usize;
        if entries.len() <= limit {
            return (entries, None);
        }
        entries.truncate(limit);
        let next = entries.last().map(|last| encode(self.list, key(last)));
        (entries, next)
    }
}

fn encode(list: &str, key: impl Display) -> String {
    hex::encode(format!("{list}:{key}"))
}

fn decode<K: FromStr>(list: &str, cursor: &str) -> Option<K> {
    let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    text.strip_prefix(list)?.strip_prefix(':')?.parse().ok()
}

/// One page of a list, answered with 200:
/// `{"status":"success","data":[...],"next_cursor":...}`.
#[derive(Debug)]
pub struct Paged<T>(PageEnvelope<T>);

impl<T> Paged<T> {
    /// Returns the entries and the next cursor (the console renders them).
    pub fn into_parts(self) -> (Vec<T>, Option<String>) {
        (self.0.data, self.0.next_cursor)
    }
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// Wraps a page in the success envelope.
pub fn page<T: Serialize>(data: Vec<T>, next_cursor: Option<String>) -> Paged<T> {
    Paged(PageEnvelope {
        status: SuccessStatus::Success,
        data,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_belong_to_their_list() {
        let request = PageRequest::<i64>::new("challenges", Some(2), None).unwrap();
        let (entries, next) = request.finish(vec![9, 8, 7], |entry| *entry);
        assert_eq!(entries, vec![9, 8]);
        let next = next.expect("a next page");
        let again = PageRequest::<i64>::new("challenges", None, Some(&next)).unwrap();
        assert_eq!((again.after, again.limit), (Some(8), DEFAULT_LIMIT));
        assert!(PageRequest::<i64>::new("attempts", None, Some(&next)).is_err());
        for bad in ["zz", "00", &hex::encode("challenges:x")] {
            assert!(PageRequest::<i64>::new("challenges", None, Some(bad)).is_err());
        }
        for limit in [0, -1, 501] {
            assert!(PageRequest::<i64>::new("challenges", Some(limit), None).is_err());
        }
        assert_eq!(request.finish(vec![1, 2], |entry| *entry).1, None);
    }
}
