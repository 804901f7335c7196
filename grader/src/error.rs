//! Job failures, classed as retryable or terminal.
//!
//! A retryable failure (PostgreSQL unreachable, a bundle that could not be
//! fetched) may succeed on another try or another grader; a terminal one
//! (a malformed payload) never will. Student mistakes are not job failures:
//! they are reported inside the job's outcome.

/// Why a job could not produce an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Another try could succeed.
    #[error("{0}")]
    Retryable(String),
    /// No try will ever succeed.
    #[error("{0}")]
    Terminal(String),
    /// The job was cancelled (by the coordinator or a shutdown); nothing is
    /// to be posted for it.
    #[error("job cancelled")]
    Cancelled,
}

impl JobError {
    /// Returns true when another try could succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, JobError::Terminal(_))
    }
}
