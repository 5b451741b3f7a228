//! Errors across JNI: every export runs inside [`guard`], which catches panics and turns errors into
//! exactly one pending Java exception of the class matching the error's classification.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fasttier_core::error::{Error, ErrorClass};
use jni::JNIEnv;

const NOT_FOUND: &str = "io/fasttier/kafka/jni/NativeNotFoundException";
const RETRIABLE: &str = "io/fasttier/kafka/jni/NativeRetriableException";
const FATAL: &str = "io/fasttier/kafka/jni/NativeFatalException";
const CONFIG: &str = "io/fasttier/kafka/jni/NativeConfigException";
/// A subclass of the fatal one: stored bytes that fail verification (the shim answers consumer reads of
/// them with Kafka's `CorruptRecordException`).
const CORRUPT: &str = "io/fasttier/kafka/jni/NativeCorruptException";

/// An error on its way to Java.
#[derive(Debug)]
pub enum BridgeError {
    /// An error of the core library.
    Core(Error),
    /// A JNI call failed; if it left a Java exception pending, that exception is what Java sees.
    Jni(jni::errors::Error),
}

impl From<Error> for BridgeError {
    fn from(e: Error) -> Self {
        BridgeError::Core(e)
    }
}

impl From<jni::errors::Error> for BridgeError {
    fn from(e: jni::errors::Error) -> Self {
        BridgeError::Jni(e)
    }
}

pub type BridgeResult<T> = Result<T, BridgeError>;

/// Shorthand for a bad argument from the Java side (a bug in the shim, never operator input).
pub fn invalid(what: impl Into<String>) -> BridgeError {
    BridgeError::Core(Error::Internal(what.into()))
}

fn throw(env: &mut JNIEnv, err: BridgeError) {
    if env.exception_check().unwrap_or(false) {
        // A Java exception is already pending (from a failed JNI call): let it propagate as is.
        return;
    }
    let (class, message) = match err {
        BridgeError::Core(e) => {
            let class = match (&e, e.class()) {
                (Error::Config { .. }, _) => CONFIG,
                (Error::Corrupt { .. }, _) => CORRUPT,
                (_, ErrorClass::NotFound) => NOT_FOUND,
                (_, ErrorClass::Retriable) => RETRIABLE,
                (_, ErrorClass::Fatal) => FATAL,
            };
            (class, e.to_string())
        }
        BridgeError::Jni(e) => (FATAL, format!("JNI call failed: {e}")),
    };
    if env.throw_new(class, &message).is_err() && !env.exception_check().unwrap_or(false) {
        // The exception class itself could not be loaded: fall back to a JDK class.
        let _ = env.throw_new("java/lang/IllegalStateException", message);
    }
}

/// Runs an export's body: panics and errors become a Java exception and `default` is returned.
pub fn guard<'l, T>(env: &mut JNIEnv<'l>, default: T, body: impl FnOnce(&mut JNIEnv<'l>) -> BridgeResult<T>) -> T {
    match catch_unwind(AssertUnwindSafe(|| body(env))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            throw(env, e);
            default
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!("native panic caught at the JNI boundary: {what}");
            throw(env, BridgeError::Core(Error::Internal(format!("native panic: {what}"))));
            default
        }
    }
}
