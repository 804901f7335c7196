//! Downloads of files and stored documents with HTTP `Range` (RFC 9110,
//! one range): 200 with the whole body, 206 with `Content-Range` for a
//! range, 416 (in the error envelope, with `Content-Range: bytes */LEN`)
//! for a malformed range or one outside the body. Files are streamed in
//! chunks, never read whole.

use std::path::Path;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::error::{ApiError, ApiResult};

/// Bytes read from a file per chunk of the response.
const CHUNK: usize = 64 * 1024;

/// What a download is named and typed as.
pub struct Named<'a> {
    pub content_type: &'a str,
    pub filename: &'a str,
}

/// The byte range (`start..=end`) a `Range` header asks of a body of
/// `length` bytes; `None` for the whole body (no header).
///
/// # Errors
/// [`ApiError::RangeNotSatisfiable`] for a malformed range, several
/// ranges, or one outside the body.
pub fn requested_range(headers: &HeaderMap, length: u64) -> ApiResult<Option<(u64, u64)>> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let refuse = |why: &str| ApiError::RangeNotSatisfiable {
        message: format!("Range: {why} (the body has {length} bytes)"),
        length,
    };
    let text = value.to_str().map_err(|_| refuse("not ASCII"))?.trim();
    let spec = text
        .strip_prefix("bytes=")
        .ok_or_else(|| refuse("only `bytes=` ranges are served"))?;
    if spec.contains(',') {
        return Err(refuse("one range at a time"));
    }
    let (first, last) = spec
        .split_once('-')
        .ok_or_else(|| refuse("give FIRST-LAST, FIRST- or -SUFFIX"))?;
    let number = |text: &str| -> ApiResult<u64> {
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(refuse("positions are whole numbers"));
        }
        text.parse().map_err(|_| refuse("position too large"))
    };
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let suffix = number(suffix)?;
            if suffix == 0 || length == 0 {
                return Err(refuse("an empty suffix"));
            }
            (length.saturating_sub(suffix), length - 1)
        }
        (first, "") => (number(first)?, length.saturating_sub(1)),
        (first, last) => {
            let (first, last) = (number(first)?, number(last)?);
            if last < first {
                return Err(refuse("the last position is before the first"));
            }
            (first, last.min(length.saturating_sub(1)))
        }
    };
    if start >= length {
        return Err(refuse("it starts past the end"));
    }
    Ok(Some((start, end)))
}

/// Headers every download carries.
fn base_headers(response: &mut Response, named: &Named<'_>, length: u64) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(named.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", named.filename))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
}

/// Answers with `body` (or the range of it asked for).
fn respond(body: Body, named: &Named<'_>, range: Option<(u64, u64)>, total: u64) -> Response {
    let (status, length) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1),
        None => (StatusCode::OK, total),
    };
    let mut response = (status, body).into_response();
    base_headers(&mut response, named, length);
    if let Some((start, end)) = range {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    response
}

/// Serves a document held in memory.
///
/// # Errors
/// 416 for a bad range.
pub fn serve_bytes(bytes: Vec<u8>, named: &Named<'_>, headers: &HeaderMap) -> ApiResult<Response> {
    let total = bytes.len() as u64;
    let range = requested_range(headers, total)?;
    let body = match range {
        // Bounds checked by `requested_range`; usize holds them (in memory).
        Some((start, end)) => bytes[start as usize..=end as usize].to_vec(),
        None => bytes,
    };
    Ok(respond(Body::from(body), named, range, total))
}

/// Streams a file.
///
/// # Errors
/// 416 for a bad range; `Internal` when the file cannot be read.
pub async fn serve_file(
    path: &Path,
    named: &Named<'_>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|error| ApiError::Internal(format!("opening {}: {error}", path.display())))?;
    let total = file
        .metadata()
        .await
        .map_err(|error| ApiError::Internal(format!("reading {}: {error}", path.display())))?
        .len();
    let range = requested_range(headers, total)?;
    let (start, length) = match range {
        Some((start, end)) => (start, end - start + 1),
        None => (0, total),
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|error| ApiError::Internal(format!("seeking {}: {error}", path.display())))?;
    let chunks =
        futures_util::stream::unfold((file.take(length), false), |(mut file, done)| async move {
            if done {
                return None;
            }
            let mut chunk = vec![0_u8; CHUNK];
            match file.read(&mut chunk).await {
                Ok(0) => None,
                Ok(read) => {
                    chunk.truncate(read);
                    Some((Ok::<_, std::io::Error>(chunk), (file, false)))
                }
                Err(error) => Some((Err(error), (file, true))),
            }
        });
    Ok(respond(Body::from_stream(chunks), named, range, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, length: u64) -> ApiResult<Option<(u64, u64)>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        requested_range(&headers, length)
    }

    #[test]
    fn ranges_are_read_like_rfc_9110_says() {
        assert_eq!(requested_range(&HeaderMap::new(), 10).unwrap(), None);
        assert_eq!(range("bytes=0-3", 10).unwrap(), Some((0, 3)));
        assert_eq!(range("bytes=4-", 10).unwrap(), Some((4, 9)));
        assert_eq!(range("bytes=-3", 10).unwrap(), Some((7, 9)));
        assert_eq!(range("bytes=-30", 10).unwrap(), Some((0, 9)));
        assert_eq!(range("bytes=8-100", 10).unwrap(), Some((8, 9)));
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
            "bytes=-",
            "bytes=+1-2",
        ] {
            match range(bad, 10) {
                Err(ApiError::RangeNotSatisfiable { length, .. }) => assert_eq!(length, 10),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
