//! Webhook calls: the body signed with HMAC-SHA256 under the professor's
//! secret (`X-Sqlarena-Signature: sha256=HEX`), retried with exponential
//! backoff until a 2xx answer or the retry window closes, each try
//! recorded as a delivery of the run.

use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::runs::Delivery;
use sqlarena_common::RunId;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Sqlarena-Signature";
/// The header naming the delivery (the same for every try of one call).
pub const DELIVERY_HEADER: &str = "X-Sqlarena-Delivery";

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0_u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|key_byte| key_byte ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The signature header's value for `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

/// How webhook calls are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Wait before the second try; doubled after each failed try.
    pub first_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
    /// No try starts once this long has passed since the first.
    pub give_up_after: Duration,
    /// How long one try may take.
    pub timeout: Duration,
}

/// One webhook call, tried until it succeeds or the window closes.
pub struct Call<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub body: &'a [u8],
    /// Names the call to the receiver (the same for every try).
    pub delivery_id: Uuid,
    pub run_id: RunId,
}

/// One try of `call`: POSTs its body and reports what happened.
pub async fn try_once(
    client: &reqwest::Client,
    call: &Call<'_>,
    attempt: u32,
    timeout: Duration,
) -> Delivery {
    let Call {
        url,
        secret,
        body,
        delivery_id,
        run_id,
    } = *call;
    let started = Instant::now();
    let at = Utc::now();
    let answer = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(secret, body))
        .header(DELIVERY_HEADER, delivery_id.to_string())
        .body(body.to_vec())
        .send()
        .await;
    let (status_code, error) = match answer {
        Ok(response) => {
            let status = response.status();
            let error = (!status.is_success()).then(|| format!("answered {status}"));
            (Some(status.as_u16()), error)
        }
        Err(error) => (None, Some(format!("no answer: {}", error_chain(&error)))),
    };
    Delivery {
        id: Uuid::now_v7(),
        run_id,
        attempt,
        at,
        status_code,
        error,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1 and 6 (a key longer than the block).
    #[test]
    fn hmac_matches_the_rfc_4231_vectors() {
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            signature("key", b"body"),
            format!("sha256={}", hex::encode(hmac_sha256(b"key", b"body")))
        );
    }
}
