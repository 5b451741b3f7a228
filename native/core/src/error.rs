//! The one internal error type of fasttier.
//!
//! Every failure inside the native library is an [`Error`]. Messages carry `key=value` context (object
//! key, config key, operation) so that the line a broker logs names the thing that is wrong. For the Java
//! side every error is classified by [`Error::class`] as not-found, retriable or fatal; the JNI bridge maps
//! those three classes to `RemoteResourceNotFoundException`, `RetriableRemoteStorageException` (where the
//! broker has it) and `RemoteStorageException`.

use std::fmt;

/// How the Java side should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The object or resource does not exist (`RemoteResourceNotFoundException`).
    NotFound,
    /// Trying again later may succeed (timeouts, throttling, 5xx, connection failures).
    Retriable,
    /// Trying again will not help without operator action (bad config, access denied, corrupt data).
    Fatal,
}

impl ErrorClass {
    /// Stable small integer used across JNI: 0 not-found, 1 retriable, 2 fatal.
    pub fn code(self) -> i32 {
        match self {
            ErrorClass::NotFound => 0,
            ErrorClass::Retriable => 1,
            ErrorClass::Fatal => 2,
        }
    }
}

/// The internal error enum.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("object not found: key={key}")]
    NotFound { key: String },

    /// A conditional create found the object already there (HTTP 412).
    #[error("object already exists: key={key}")]
    AlreadyExists { key: String },

    /// Stored bytes failed verification (CRC-32C mismatch, truncated object, unparsable manifest).
    #[error("corrupt object: key={key} {detail}")]
    Corrupt { key: String, detail: String },

    /// A transient failure of the object store or network; the operation may be retried.
    #[error("transient object-store failure: op={op} key={key} {detail}")]
    Transient { op: &'static str, key: String, detail: String },

    /// A failure that will not go away by itself (access denied, missing bucket, rejected request).
    #[error("object-store failure: op={op} key={key} {detail}")]
    Store { op: &'static str, key: String, detail: String },

    /// Invalid plugin configuration; `key` is the full config name the operator wrote.
    #[error("invalid configuration: key={key} {detail}")]
    Config { key: String, detail: String },

    /// Local file I/O failed.
    #[error("local I/O failed: path={path} {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The operation was cancelled (e.g. the calling Kafka thread was interrupted).
    #[error("operation cancelled: op={op} key={key}")]
    Cancelled { op: &'static str, key: String },

    /// A network failure talking to a Kafka broker (replication through the fast tier); retriable.
    #[error("network failure: op={op} peer={peer} {detail}")]
    Network { op: &'static str, peer: String, detail: String },

    /// A Kafka protocol message that could not be decoded or answered (replication through the fast tier).
    #[error("kafka protocol error: peer={peer} {detail}")]
    Protocol { peer: String, detail: String },

    /// A bug or an invariant violation inside fasttier (includes caught panics).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Classify for the Java side.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotFound { .. } => ErrorClass::NotFound,
            Error::Transient { .. } | Error::Cancelled { .. } | Error::Network { .. } => ErrorClass::Retriable,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    ErrorClass::Retriable
                }
                _ => ErrorClass::Fatal,
            },
            Error::AlreadyExists { .. }
            | Error::Corrupt { .. }
            | Error::Store { .. }
            | Error::Config { .. }
            | Error::Protocol { .. }
            | Error::Internal(_) => ErrorClass::Fatal,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), source }
    }

    pub fn corrupt(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt { key: key.into(), detail: detail.into() }
    }

    pub fn config(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Config { key: key.into(), detail: detail.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_messages_carry_context() {
        let e = Error::NotFound { key: "a/b".into() };
        assert_eq!(e.class(), ErrorClass::NotFound);
        assert_eq!(e.to_string(), "object not found: key=a/b");
        let e = Error::Transient { op: "get", key: "k".into(), detail: "timeout".into() };
        assert_eq!(e.class(), ErrorClass::Retriable);
        assert!(e.to_string().contains("op=get key=k"));
        let e = Error::corrupt("x.log", "chunk=3 crc32c expected=1 actual=2");
        assert_eq!(e.class(), ErrorClass::Fatal);
        assert!(e.to_string().contains("key=x.log"));
        let e = Error::config("rsm.config.s3.bucket", "is required");
        assert_eq!(e.class().code(), 2);
    }
}
