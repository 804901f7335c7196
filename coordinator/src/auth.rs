//! Passwords, bearer tokens and the extractors that authenticate requests.
//!
//! Passwords are argon2 hashes. Tokens (sessions, grader tokens, cluster
//! tokens, invites) are random secrets shown once; the store keeps only their
//! sha256, looked up by hash and then compared in constant time. No secret is
//! ever logged.

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlarena_common::{GraderState, Role};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Grader, User};

/// The working memory of one argon2 computation with the default
/// parameters (19 MiB), allocated once and reused.
///
/// Hashing must not allocate it each time: glibc keeps a freed block this
/// large in the arena of the thread that freed it, so every blocking-pool
/// thread that ever hashed held 19 MiB or more (a login flood reached
/// 550 MiB of RSS after a few dozen hashes; BENCHMARKS.md).
pub struct HashMemory(Vec<Block>);

impl HashMemory {
    /// Allocates the memory for the default parameters.
    pub fn new() -> HashMemory {
        HashMemory(vec![Block::default(); Params::DEFAULT.block_count()])
    }
}

impl Default for HashMemory {
    fn default() -> Self {
        HashMemory::new()
    }
}

fn hashing_error(error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("hashing a password: {error}"))
}

/// Hashes a password with argon2id (off the async runtime: it is slow on
/// purpose).
///
/// # Errors
/// Fails only if the hasher fails, which is an internal error.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password_in(&password, &mut HashMemory::new()))
        .await
        .map_err(|error| ApiError::Internal(format!("hashing task: {error}")))?
}

/// Hashes a password with argon2id and the default parameters in `memory`
/// on the calling thread (tens of milliseconds: call it from a blocking
/// thread). The result is the usual PHC string (`$argon2id$v=19$...`).
///
/// # Errors
/// Fails only if the hasher fails, which is an internal error.
pub fn hash_password_in(password: &str, memory: &mut HashMemory) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(hashing_error)?;
    let params = Params::DEFAULT;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut output, &mut memory.0)
        .map_err(hashing_error)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hashing_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(hashing_error)?),
    };
    Ok(hash.to_string())
}

/// Checks a password against a stored argon2 hash.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        verify_password_in(&password, &hash, &mut HashMemory::new())
    })
    .await
    .unwrap_or(false)
}

/// Checks a password against a stored argon2 hash (PHC string, any argon2
/// variant and parameters), computing in `memory` when it is large enough,
/// on the calling thread.
pub fn verify_password_in(password: &str, hash: &str, memory: &mut HashMemory) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut output = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let computed = if params.block_count() <= memory.0.len() {
        argon2.hash_password_into_with_memory(
            password.as_bytes(),
            raw_salt,
            &mut output,
            &mut memory.0,
        )
    } else {
        // Made with more memory than the default: allocate for it.
        argon2.hash_password_into(password.as_bytes(), raw_salt, &mut output)
    };
    computed.is_ok() && bool::from(expected.as_bytes().ct_eq(&output))
}

/// Creates a new random token with a readable prefix (`sqa_`, `sqg_`, ...).
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Returns the hex sha256 of a token: what the store keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two token hashes in constant time.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Extracts the bearer token of a request, if any.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The signed-in user of a request (`Authorization: Bearer TOKEN` from
/// `/login`), with the hash of the session's token. Rejects with 401 when
/// the token is missing, unknown, expired or revoked.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User, SessionHash);

/// The sha256 of the token a request was signed in with.
#[derive(Debug, Clone)]
struct SessionHash(String);

impl CurrentUser {
    /// The user of a session whose token hashes to `token_hash`, found by
    /// another way in than the bearer header (the console's cookie), so
    /// that the same rules apply to it.
    pub(crate) fn from_session(user: User, token_hash: String) -> CurrentUser {
        CurrentUser(user, SessionHash(token_hash))
    }

    /// Returns 403 unless the user has one of `roles`.
    ///
    /// # Errors
    /// `Forbidden` naming the roles allowed.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            Err(ApiError::Forbidden(format!(
                "this needs one of the roles {}",
                names.join(", ")
            )))
        }
    }

    /// Returns true for admins.
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// Returns the hash of the token this request was signed in with.
    pub fn token_hash(&self) -> &str {
        &self.1 .0
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::Unauthorized(
                "sign in first: send `Authorization: Bearer TOKEN` with the token from /login"
                    .into(),
            )
        })?;
        let hash = token_hash(token);
        match state.store.get_session_user(&hash, Utc::now()).await? {
            Some(user) => Ok(CurrentUser(user, SessionHash(hash))),
            None => Err(ApiError::Unauthorized(
                "the token is unknown or expired: sign in again".into(),
            )),
        }
    }
}

/// The grader making a grader-protocol call, authenticated by its grader
/// token. A grader declared DEAD gets 401 and must register again.
#[derive(Debug, Clone)]
pub struct GraderAuth(pub Grader);

impl FromRequestParts<AppState> for GraderAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer GRADER_TOKEN`".into())
        })?;
        let hash = token_hash(token);
        match state.store.get_grader_by_token(&hash).await? {
            Some(grader)
                if hashes_match(&grader.token_hash, &hash) && grader.state != GraderState::Dead =>
            {
                Ok(GraderAuth(grader))
            }
            Some(_) => Err(ApiError::Unauthorized(
                "this grader was declared dead or deregistered: register again".into(),
            )),
            None => Err(ApiError::Unauthorized(
                "unknown grader token: register first".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("correct horse".into(), hash.clone()).await);
        assert!(!verify_password("wrong horse".into(), hash).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }

    /// Hashes made in reused memory are standard PHC argon2id strings, and
    /// hashes made by the standard API (every stored hash so far) verify.
    #[test]
    fn hashes_in_reused_memory_match_the_standard_api() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = HashMemory::new();
        let ours = hash_password_in("correct horse", &mut memory).unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let standard = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password_in("battery staple", &standard, &mut memory));
        assert!(!verify_password_in(
            "battery stapler",
            &standard,
            &mut memory
        ));
        // Other parameters (less memory, argon2i) verify too.
        let small = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"tiny", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password_in("tiny", &small, &mut memory));
        assert!(!verify_password_in(
            "tiny",
            "$argon2id$v=19$garbage",
            &mut memory
        ));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token("sqa_");
        let b = new_token("sqa_");
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
        assert!(hashes_match(&token_hash(&a), &token_hash(&a)));
        assert!(!hashes_match(&token_hash(&a), &token_hash(&b)));
    }
}
