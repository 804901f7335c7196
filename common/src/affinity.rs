//! How a grader reports the challenge bundles it holds on a lease request:
//! the query parameter `bundles`, the version hashes joined by commas
//! (empty: it holds none; absent: it does not say).

/// The most bundles one lease request reports (a grader holding more
/// reports its most recently used).
pub const MAX_REPORTED_BUNDLES: usize = 256;

/// The length of a version hash: 16 bytes, in lowercase hex.
pub const VERSION_HASH_LEN: usize = 32;

/// The `bundles` parameter for `hashes` (at most [`MAX_REPORTED_BUNDLES`]
/// of them, the first ones).
pub fn bundles_parameter<S: AsRef<str>>(hashes: &[S]) -> String {
    hashes
        .iter()
        .take(MAX_REPORTED_BUNDLES)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a `bundles` parameter.
///
/// # Errors
/// A message naming what is wrong: a hash that is not 32 lowercase hex
/// digits, or more than [`MAX_REPORTED_BUNDLES`] of them.
pub fn parse_bundles_parameter(text: &str) -> Result<Vec<String>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let hashes: Vec<String> = text.split(',').map(str::to_owned).collect();
    if hashes.len() > MAX_REPORTED_BUNDLES {
        return Err(format!(
            "bundles: at most {MAX_REPORTED_BUNDLES} version hashes, not {}",
            hashes.len()
        ));
    }
    for hash in &hashes {
        let valid = hash.len() == VERSION_HASH_LEN
            && hash
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if !valid {
            return Err(format!(
                "bundles: {hash:?} is not a version hash ({VERSION_HASH_LEN} lowercase hex digits)"
            ));
        }
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_read_back_as_written() {
        let hashes = vec!["0".repeat(32), "abcdef0123456789".repeat(2)];
        assert_eq!(
            parse_bundles_parameter(&bundles_parameter(&hashes)),
            Ok(hashes)
        );
        assert_eq!(parse_bundles_parameter(""), Ok(vec![]));
    }

    #[test]
    fn malformed_bundles_are_refused() {
        for bad in ["x", ",", &"A".repeat(32), &format!("{},", "0".repeat(32))] {
            assert!(parse_bundles_parameter(bad).is_err(), "{bad:?} accepted");
        }
        let too_many = vec!["1".repeat(32); MAX_REPORTED_BUNDLES + 1].join(",");
        assert!(parse_bundles_parameter(&too_many).is_err());
        let many = vec!["1".repeat(32); MAX_REPORTED_BUNDLES + 1];
        assert_eq!(
            parse_bundles_parameter(&bundles_parameter(&many))
                .unwrap()
                .len(),
            MAX_REPORTED_BUNDLES
        );
    }
}
