//! [`S3Store`]: the [`ObjectStore`] for S3 and S3-compatible servers, on aws-sdk-s3.
//!
//! What this module takes care of, beyond calling the SDK:
//!
//! * **Client settings** that work with S3-compatible servers and never hang a broker thread: request
//!   checksums and response validation only "when required" (many servers reject the SDK's 2025 default
//!   CRC32 trailers), connect/read/attempt/operation timeouts, standard retries with exponential backoff
//!   and jitter, and stalled-stream protection for downloads only (see [`S3Store::new`]).
//! * **Error mapping** ([`classify`]): missing objects are `NotFound`, a failed conditional create is
//!   `AlreadyExists`, everything that may go away by itself (timeouts, connection failures, 5xx,
//!   throttling, `RequestTimeout`, conditional-write conflicts) is `Transient`, and everything that needs an
//!   operator (credentials, permissions, missing bucket, rejected requests) is `Store` with a detail naming
//!   the S3 error code, its message, the HTTP status, the bucket, the endpoint and the request id.
//! * **Response bodies** are read with a bounded pre-allocation, under a timeout, with a check that the
//!   server sent what it announced; a failed body read is retried (the SDK retries only up to the response
//!   headers).
//! * **Ranges** follow the trait contract exactly, including empty ranges and empty objects (which S3
//!   itself cannot express with a `Range` header), ends past 2^63 (sent as an open `bytes=a-`: MinIO
//!   ignores a Range it cannot parse and sends the whole object, which is also handled), and servers that
//!   ignore `Range` (the unwanted bytes are skipped while streaming, never buffered).
//!
//! Known limits: HEAD responses carry no error code, so `head` of a key in a missing bucket is `NotFound`
//! ([`S3Store::check_bucket`] at start-up is what reports the bucket). The SDK retries a timed-out
//! `CompleteMultipartUpload` or conditional `PutObject`; if the first attempt had in fact succeeded, the
//! retry reports `NotFound` (the upload is gone) or `AlreadyExists` (the object is there, written by this
//! very call). Callers that need certainty check the object (size, stored CRC) after such an error.

use std::error::Error as StdError;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};

use super::{CompletedPart, ObjectMeta, ObjectStore, PutOptions};
use crate::error::{Error, Result};

/// Largest buffer pre-allocated from a `Content-Length` the server announced; bigger bodies grow as they
/// arrive, so a lying server cannot make us allocate more than it actually sends.
const MAX_PREALLOC: u64 = 64 * 1024 * 1024;
/// Longest backoff between two attempts to read a response body.
const MAX_BODY_BACKOFF: Duration = Duration::from_secs(5);

/// Everything needed to reach one bucket. Field names follow the `rsm.config.s3.*` properties.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Bucket name (`rsm.config.s3.bucket`, required).
    pub bucket: String,
    /// Region of the bucket (`rsm.config.s3.region`); S3-compatible servers usually accept `us-east-1`.
    pub region: String,
    /// Endpoint URL of an S3-compatible server (`http://…` or `https://…`); `None` for AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub force_path_style: bool,
    /// Static access key id; used only together with `secret_access_key`, otherwise the default AWS
    /// credential chain (environment, profile, web identity, ECS, IMDS) supplies credentials.
    pub access_key_id: Option<String>,
    /// Static secret access key (never printed by `Debug`).
    pub secret_access_key: Option<String>,
    /// Session token for temporary static credentials (never printed by `Debug`).
    pub session_token: Option<String>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for response bytes: the time to the response headers, and the longest a download may
    /// stall without a byte (stalled-stream grace period).
    pub read_timeout: Duration,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Timeout of one operation including its retries; also bounds reading a response body.
    pub operation_timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry; grows exponentially (with jitter) up to 20 s.
    pub initial_backoff: Duration,
}

impl S3Settings {
    /// Settings for `bucket` in `region` with the documented defaults for everything else.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        Self { bucket: bucket.into(), region: region.into(), ..Self::default() }
    }

    /// The endpoint as operators should read it in messages.
    pub fn endpoint_display(&self) -> String {
        match &self.endpoint {
            Some(ep) => ep.clone(),
            None => format!("aws(region={})", self.region),
        }
    }

    fn static_credentials(&self) -> Result<Option<Credentials>> {
        let nonempty = |s: &Option<String>| s.as_deref().filter(|v| !v.is_empty()).map(str::to_string);
        let token = nonempty(&self.session_token);
        match (nonempty(&self.access_key_id), nonempty(&self.secret_access_key)) {
            (Some(id), Some(secret)) => Ok(Some(Credentials::new(id, secret, token, None, "fasttier-static"))),
            (Some(_), None) => Err(Error::config(
                "rsm.config.s3.secret.access.key",
                "is required when rsm.config.s3.access.key.id is set",
            )),
            (None, Some(_)) => Err(Error::config(
                "rsm.config.s3.access.key.id",
                "is required when rsm.config.s3.secret.access.key is set",
            )),
            (None, None) if token.is_some() => Err(Error::config(
                "rsm.config.s3.session.token",
                "requires rsm.config.s3.access.key.id and rsm.config.s3.secret.access.key",
            )),
            (None, None) => Ok(None),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.bucket.trim().is_empty() {
            return Err(Error::config("rsm.config.s3.bucket", "is required"));
        }
        if self.region.trim().is_empty() {
            return Err(Error::config("rsm.config.s3.region", "must not be empty"));
        }
        if let Some(ep) = &self.endpoint {
            let rest = ep.strip_prefix("http://").or_else(|| ep.strip_prefix("https://"));
            if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
                return Err(Error::config(
                    "rsm.config.s3.endpoint",
                    format!("value={ep} must be an http:// or https:// URL with a host"),
                ));
            }
        }
        for (key, d) in [
            ("rsm.config.s3.connect.timeout.ms", self.connect_timeout),
            ("rsm.config.s3.read.timeout.ms", self.read_timeout),
            ("rsm.config.s3.attempt.timeout.ms", self.attempt_timeout),
            ("rsm.config.s3.operation.timeout.ms", self.operation_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::config(key, "must be greater than 0"));
            }
        }
        if self.max_attempts == 0 {
            return Err(Error::config("rsm.config.s3.max.attempts", "must be at least 1"));
        }
        self.static_credentials().map(|_| ())
    }
}

impl Default for S3Settings {
    /// The defaults of `docs/configuration.md`, with an empty (invalid) bucket.
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".to_string(),
            endpoint: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            connect_timeout: Duration::from_millis(3_000),
            read_timeout: Duration::from_millis(30_000),
            attempt_timeout: Duration::from_millis(60_000),
            operation_timeout: Duration::from_millis(180_000),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
        }
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .finish()
    }
}

/// How an S3 failure maps onto [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// [`Error::NotFound`]
    NotFound,
    /// [`Error::AlreadyExists`]
    AlreadyExists,
    /// [`Error::Transient`]
    Transient,
    /// [`Error::Store`]
    Store,
}

/// Classifies an S3 error response by its error code (preferred) and HTTP status.
///
/// The code decides when it is known, because statuses are ambiguous (`RequestTimeout` is a 400,
/// `NoSuchBucket` a 404, `SlowDown` a 503, `ExpiredToken` a 400 that goes away once the credential
/// provider refreshes). HEAD responses carry no body and hence no code, so the status must suffice.
pub fn classify(status: Option<u16>, code: Option<&str>) -> Class {
    if let Some(code) = code {
        match code {
            "NoSuchKey" | "NoSuchUpload" | "NoSuchVersion" => return Class::NotFound,
            "NoSuchBucket" => return Class::Store,
            "PreconditionFailed" => return Class::AlreadyExists,
            "ConditionalRequestConflict"
            | "OperationAborted"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "ProvisionedThroughputExceededException"
            | "EC2ThrottledException"
            | "PriorRequestNotComplete"
            | "TransactionInProgressException"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "TokenRefreshRequired"
            | "IDPCommunicationError"
            | "XMinioServerNotInitialized"
            | "XMinioReadQuorum"
            | "XMinioWriteQuorum"
            | "XMinioStorageFull" => return Class::Transient,
            "InvalidRange"
            | "NotImplemented"
            | "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AllAccessDisabled"
            | "AccountProblem"
            | "InvalidToken"
            | "InvalidBucketName"
            | "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "InvalidRequest"
            | "InvalidArgument"
            | "MalformedXML"
            | "InvalidPart"
            | "InvalidPartOrder"
            | "EntityTooSmall"
            | "EntityTooLarge"
            | "MissingContentLength"
            | "BadDigest"
            | "InvalidDigest"
            | "XAmzContentSHA256Mismatch" => return Class::Store,
            _ => {}
        }
    }
    match status {
        Some(404) => Class::NotFound,
        Some(412) => Class::AlreadyExists,
        // Conflicts of the operations used here (conditional writes racing) resolve on retry.
        Some(307 | 408 | 409 | 429) => Class::Transient,
        Some(501) => Class::Store,
        Some(s) if s >= 500 => Class::Transient,
        Some(_) => Class::Store,
        // No HTTP response at all: the request may not have reached the server.
        None => Class::Transient,
    }
}

/// What an operator should check for a given S3 error code.
fn hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "InvalidAccessKeyId" => "the server does not know this access key id: check rsm.config.s3.access.key.id",
        "SignatureDoesNotMatch" => {
            "the secret key does not match the access key id: check rsm.config.s3.secret.access.key"
        }
        "AccessDenied" | "AllAccessDisabled" => "the credentials lack permission for this request on the bucket",
        "InvalidToken" | "ExpiredToken" | "ExpiredTokenException" => {
            "the session token is invalid or expired: check rsm.config.s3.session.token or the credential source"
        }
        "NoSuchBucket" => "check rsm.config.s3.bucket and rsm.config.s3.endpoint",
        "AuthorizationHeaderMalformed" | "PermanentRedirect" => {
            "the bucket is in another region: check rsm.config.s3.region"
        }
        "NotImplemented" => "the server does not implement this request (e.g. conditional writes)",
        "InvalidBucketName" => "check rsm.config.s3.bucket",
        _ => return None,
    })
}

/// Parses a `Content-Range: bytes a-b/total` header into `(a, b)` (inclusive).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, _total) = spec.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
    (a <= b).then_some((a, b))
}

/// The `Range` header value for `range` (non-empty, `start < end`): `bytes=start-(end-1)`, or the open
/// `bytes=start-` when `end` exceeds what S3 servers parse (signed 64-bit offsets).
fn range_header(range: &Range<u64>) -> String {
    let last = range.end - 1;
    if last > i64::MAX as u64 {
        format!("bytes={}-", range.start)
    } else {
        format!("bytes={}-{}", range.start, last)
    }
}

/// Whether a (start..end) read of an object of `size` bytes is satisfiable: the memory store's rule.
fn satisfiable(range: &Range<u64>, size: u64) -> bool {
    range.start < size || (size == 0 && range.start == 0)
}

fn to_size(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

/// The S3 [`ObjectStore`]; cheap to share (`Arc`) between tasks.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    settings: S3Settings,
    endpoint: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl S3Store {
    /// Validates `settings` and builds the client. No request is sent (call [`S3Store::check_bucket`]);
    /// the only awaiting is the construction of the default credential chain when no static credentials
    /// are set.
    ///
    /// Client settings:
    /// * request checksum calculation and response checksum validation "when required": since 2025 the
    ///   SDK otherwise sends CRC32 trailers on every upload, which many S3-compatible servers reject;
    /// * standard retry mode, `max_attempts`, exponential backoff with jitter from `initial_backoff`;
    /// * connect, read, attempt and operation timeouts;
    /// * stalled-stream protection for **downloads only**, with `read_timeout` as grace period. Upload
    ///   bodies here are always in memory, so an upload can only stall because the server or the network
    ///   stopped reading, which the attempt timeout already bounds; upload protection, on the other hand,
    ///   is known to misfire when a slow (often local) server reads a large body slowly or takes its time
    ///   between receiving the body and answering. Downloads keep it: once the response headers arrived no
    ///   SDK timeout covers the body, and a server that stops sending must not hang a reader.
    pub async fn new(settings: S3Settings) -> Result<S3Store> {
        settings.validate()?;
        let credentials = match settings.static_credentials()? {
            Some(creds) => SharedCredentialsProvider::new(creds),
            None => SharedCredentialsProvider::new(
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(Region::new(settings.region.clone()))
                    .build()
                    .await,
            ),
        };
        let retry = RetryConfig::standard()
            .with_max_attempts(settings.max_attempts)
            .with_initial_backoff(settings.initial_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .operation_attempt_timeout(settings.attempt_timeout)
            .operation_timeout(settings.operation_timeout)
            .build();
        let stalled = StalledStreamProtectionConfig::enabled()
            .upload_enabled(false)
            .download_enabled(true)
            .grace_period(settings.read_timeout)
            .build();
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(retry)
            .timeout_config(timeouts)
            .stalled_stream_protection(stalled);
        if let Some(ep) = &settings.endpoint {
            config = config.endpoint_url(ep.trim_end_matches('/'));
        }
        let endpoint = settings.endpoint_display();
        Ok(S3Store { client: Client::from_conf(config.build()), settings, endpoint })
    }

    /// The settings this store was built from.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// Checks that the bucket exists and the credentials may use it (HeadBucket, and a one-key listing to
    /// learn the exact error code when HeadBucket is refused). Meant for start-up: the error names what
    /// is wrong, e.g. `bucket=foo does not exist (NoSuchBucket) … endpoint=http://…`, the rejected access
    /// key, the bucket's real region, or the unreachable endpoint (a `Transient` error).
    pub async fn check_bucket(&self) -> Result<()> {
        const OP: &str = "check_bucket";
        let bucket = &self.settings.bucket;
        let key = format!("s3://{bucket}/");
        let head_err = match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let status = head_err.raw_response().map(|r| r.status().as_u16());
        if status == Some(301) {
            let actual = head_err
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .unwrap_or("unknown")
                .to_string();
            return Err(Error::Store {
                op: OP,
                key,
                detail: format!(
                    "bucket={bucket} is in region={actual}, not region={} (PermanentRedirect): set rsm.config.s3.region endpoint={}",
                    self.settings.region, self.endpoint
                ),
            });
        }
        let head_mapped = self.map_err(OP, &key, head_err);
        if matches!(head_mapped, Error::Transient { .. }) {
            return Err(head_mapped);
        }
        // HEAD responses have no body, hence no error code: ask again with a request whose error names
        // the problem (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, NoSuchBucket, …).
        match self.client.list_objects_v2().bucket(bucket).max_keys(1).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code().is_some() => Err(match self.map_err(OP, &key, e) {
                // A 404 with a code other than NoSuchBucket still means the bucket is not there.
                Error::NotFound { .. } => self.missing_bucket(OP, &key, status),
                other => other,
            }),
            Err(_) if status == Some(404) => Err(self.missing_bucket(OP, &key, status)),
            Err(_) => Err(match head_mapped {
                Error::NotFound { .. } => self.missing_bucket(OP, &key, status),
                other => other,
            }),
        }
    }

    fn missing_bucket(&self, op: &'static str, key: &str, status: Option<u16>) -> Error {
        Error::Store {
            op,
            key: key.to_string(),
            detail: format!(
                "bucket={} does not exist (NoSuchBucket) status={} endpoint={} hint: check rsm.config.s3.bucket and rsm.config.s3.endpoint",
                self.settings.bucket,
                status.map_or_else(|| "none".to_string(), |s| s.to_string()),
                self.endpoint
            ),
        }
    }

    /// Maps an SDK error onto [`Error`], naming `op`, `key`, bucket, endpoint and the S3 error.
    fn map_err<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let key_s = key.to_string();
        let bucket = &self.settings.bucket;
        let endpoint = &self.endpoint;
        if let Some(cred) = find_source::<CredentialsError>(&err) {
            let detail = format!(
                "no usable credentials: {} bucket={bucket} endpoint={endpoint} hint: set rsm.config.s3.access.key.id and rsm.config.s3.secret.access.key, or configure the default AWS credential chain",
                error_chain(cred)
            );
            return match cred {
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => {
                    Error::Transient { op, key: key_s, detail }
                }
                _ => Error::Store { op, key: key_s, detail },
            };
        }
        match &err {
            SdkError::TimeoutError(_) => Error::Transient {
                op,
                key: key_s,
                detail: format!(
                    "timed out (attempt_timeout={}ms operation_timeout={}ms) bucket={bucket} endpoint={endpoint}",
                    self.settings.attempt_timeout.as_millis(),
                    self.settings.operation_timeout.as_millis()
                ),
            },
            SdkError::DispatchFailure(d) => {
                let what = if d.is_timeout() {
                    format!(
                        "timed out connecting or waiting for a response (connect_timeout={}ms read_timeout={}ms)",
                        self.settings.connect_timeout.as_millis(),
                        self.settings.read_timeout.as_millis()
                    )
                } else if d.is_io() {
                    "cannot connect or the connection failed".to_string()
                } else if d.is_user() {
                    "the request could not be sent (client configuration)".to_string()
                } else {
                    "the request could not be sent".to_string()
                };
                let detail = format!("{what}: {} bucket={bucket} endpoint={endpoint}", error_chain(&err));
                let permanent = d.is_user() || d.as_other() == Some(aws_smithy_types::retry::ErrorKind::ClientError);
                if permanent {
                    Error::Store { op, key: key_s, detail }
                } else {
                    Error::Transient { op, key: key_s, detail }
                }
            }
            SdkError::ConstructionFailure(_) => Error::Store {
                op,
                key: key_s,
                detail: format!(
                    "could not build the request: {} bucket={bucket} endpoint={endpoint}",
                    error_chain(&err)
                ),
            },
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
                let raw = err.raw_response();
                let status = raw.map(|r| r.status().as_u16());
                let request_id = raw
                    .and_then(|r| r.headers().get("x-amz-request-id").or_else(|| r.headers().get("x-amzn-requestid")))
                    .unwrap_or("none");
                let code = err.code();
                // A response we could not parse: let the status decide, unknown means transient.
                let class = if matches!(err, SdkError::ResponseError(_)) && code.is_none() {
                    match status {
                        Some(s) if (400..500).contains(&s) => classify(Some(s), None),
                        _ => Class::Transient,
                    }
                } else {
                    classify(status, code)
                };
                match class {
                    Class::NotFound => Error::NotFound { key: key_s },
                    Class::AlreadyExists => Error::AlreadyExists { key: key_s },
                    Class::Transient | Class::Store => {
                        let summary = match code {
                            Some("NoSuchBucket") => format!("bucket={bucket} does not exist"),
                            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken") => {
                                "credentials rejected".to_string()
                            }
                            Some("AccessDenied") => format!("access denied to bucket={bucket}"),
                            Some(_) => "S3 error".to_string(),
                            None if matches!(err, SdkError::ResponseError(_)) => {
                                format!("unreadable response: {}", error_chain(&err))
                            }
                            None => format!("S3 error without code: {}", error_chain(&err)),
                        };
                        let mut detail = summary;
                        if let Some(code) = code {
                            detail.push_str(&format!(" ({code}: {})", err.message().unwrap_or("no message")));
                        }
                        let status_s = status.map_or_else(|| "none".to_string(), |s| s.to_string());
                        detail.push_str(&format!(" status={status_s}"));
                        if !detail.starts_with("bucket=") && !detail.starts_with("access denied to bucket=") {
                            detail.push_str(&format!(" bucket={bucket}"));
                        }
                        detail.push_str(&format!(" endpoint={endpoint} request_id={request_id}"));
                        if let Some(h) = code.and_then(hint) {
                            detail.push_str(" hint: ");
                            detail.push_str(h);
                        } else if status == Some(403) && code.is_none() {
                            detail.push_str(" hint: access denied; check the credentials and the bucket policy");
                        }
                        if class == Class::Transient {
                            Error::Transient { op, key: key_s, detail }
                        } else {
                            Error::Store { op, key: key_s, detail }
                        }
                    }
                }
            }
            // SdkError is non-exhaustive: an unknown kind of failure is assumed to be worth a retry.
            _ => Error::Transient {
                op,
                key: key_s,
                detail: format!("{} bucket={bucket} endpoint={endpoint}", error_chain(&err)),
            },
        }
    }

    fn unsatisfiable(&self, key: &str, range: &Range<u64>, size: Option<u64>) -> Error {
        Error::Store {
            op: "get_range",
            key: key.to_string(),
            detail: format!(
                "range={}..{} object_size={} not satisfiable (InvalidRange) bucket={}",
                range.start,
                range.end,
                size.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
                self.settings.bucket
            ),
        }
    }

    /// GetObject (whose request the SDK retries), then the body. A failed body read is retried here with
    /// exponential backoff, up to `max_attempts` reads and while `operation_timeout`, counted from the
    /// first request, has not run out.
    async fn get_object(&self, op: &'static str, key: &str, range: Option<&Range<u64>>) -> Result<Bytes> {
        let deadline = tokio::time::Instant::now() + self.settings.operation_timeout;
        let max_attempts = self.settings.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.get_object_once(op, key, range, deadline).await {
                Outcome::Done(result) => return result,
                Outcome::BodyFailed(e) => {
                    let backoff =
                        self.settings.initial_backoff.saturating_mul(1 << (attempt - 1).min(16)).min(MAX_BODY_BACKOFF);
                    if attempt >= max_attempts || tokio::time::Instant::now() + backoff >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(op, key, attempt, error = %e, "retrying S3 read after a body failure");
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One GetObject and its body. Request failures are final (the SDK already retried them); body-read
    /// failures are [`Outcome::BodyFailed`].
    async fn get_object_once(
        &self,
        op: &'static str,
        key: &str,
        range: Option<&Range<u64>>,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        match self.get_object_inner(op, key, range, deadline).await {
            Ok(Ok(data)) => Outcome::Done(Ok(data)),
            Ok(Err(body_error)) => Outcome::BodyFailed(body_error),
            Err(e) => Outcome::Done(Err(e)),
        }
    }

    /// `Err` is final; `Ok(Err)` is a failed (retriable) body read.
    async fn get_object_inner(
        &self,
        op: &'static str,
        key: &str,
        range: Option<&Range<u64>>,
        deadline: tokio::time::Instant,
    ) -> Result<Result<Bytes>> {
        let mut req = self.client.get_object().bucket(&self.settings.bucket).key(key);
        if let Some(r) = range {
            req = req.range(range_header(r));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                let is_range_error =
                    e.code() == Some("InvalidRange") || e.raw_response().map(|r| r.status().as_u16()) == Some(416);
                return match (range, is_range_error) {
                    (Some(r), true) => {
                        // Bytes 0.. of an empty object are an empty read in the trait; S3 says 416.
                        let size = self.head(key).await?.size;
                        if satisfiable(r, size) {
                            Ok(Ok(Bytes::new()))
                        } else {
                            Err(self.unsatisfiable(key, r, Some(size)))
                        }
                    }
                    _ => Err(self.map_err(op, key, e)),
                };
            }
        };
        let announced = to_size(out.content_length());
        let (skip, take) = match (range, out.content_range()) {
            (None, _) => (0, u64::MAX),
            (Some(r), Some(cr)) => {
                let (first, last) = parse_content_range(cr).ok_or_else(|| Error::Store {
                    op,
                    key: key.to_string(),
                    detail: format!("unparsable Content-Range={cr:?} for range={}..{}", r.start, r.end),
                })?;
                if first != r.start || last >= r.end {
                    return Err(Error::Store {
                        op,
                        key: key.to_string(),
                        detail: format!("server returned Content-Range={cr:?} for range={}..{}", r.start, r.end),
                    });
                }
                (0, last - first + 1)
            }
            // No Content-Range: the server ignored the Range header and sends the whole object.
            (Some(r), None) => {
                let size = announced.unwrap_or(u64::MAX);
                if !satisfiable(r, size) {
                    return Err(self.unsatisfiable(key, r, Some(size)));
                }
                (r.start, r.end - r.start)
            }
        };
        let expected = match (range, announced) {
            (None, Some(n)) => Some(n),
            (Some(_), Some(n)) if skip == 0 => Some(n.min(take)),
            (Some(r), Some(n)) => Some(n.saturating_sub(r.start).min(take)),
            _ => None,
        };
        let read = read_body(out.body, skip, take, expected);
        let data = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => {
                return Ok(Err(Error::Transient {
                    op,
                    key: key.to_string(),
                    detail: format!(
                        "reading the response body failed: {} bucket={} endpoint={}",
                        error_chain(&e),
                        self.settings.bucket,
                        self.endpoint
                    ),
                }))
            }
            Err(_) => {
                return Ok(Err(Error::Transient {
                    op,
                    key: key.to_string(),
                    detail: format!(
                        "reading the response body took longer than operation_timeout={}ms bucket={}",
                        self.settings.operation_timeout.as_millis(),
                        self.settings.bucket
                    ),
                }))
            }
        };
        if let Some(n) = expected {
            if data.len() as u64 != n {
                return Ok(Err(Error::Transient {
                    op,
                    key: key.to_string(),
                    detail: format!("truncated response body: got={} expected={n} bytes", data.len()),
                }));
            }
        }
        Ok(Ok(data))
    }
}

/// The result of one GetObject attempt.
enum Outcome {
    /// Success, or a failure not worth another read.
    Done(Result<Bytes>),
    /// The response arrived but reading its body failed.
    BodyFailed(Error),
}

/// Reads `body`, dropping the first `skip` bytes and keeping at most `take`; stops reading (and drops the
/// connection) as soon as `take` bytes are there.
async fn read_body(
    mut body: ByteStream,
    mut skip: u64,
    take: u64,
    expected: Option<u64>,
) -> std::result::Result<Bytes, aws_smithy_types::byte_stream::error::Error> {
    let capacity = expected.unwrap_or(0).min(take).min(MAX_PREALLOC);
    let mut buf = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while (buf.len() as u64) < take {
        let Some(mut chunk) = body.try_next().await? else { break };
        if skip > 0 {
            let n = skip.min(chunk.len() as u64);
            skip -= n;
            let _ = chunk.split_to(n as usize);
        }
        let room = take - buf.len() as u64;
        if (chunk.len() as u64) > room {
            chunk.truncate(room as usize);
        }
        if buf.is_empty() && chunk.len() as u64 == take {
            // The common single-chunk case: no copy.
            return Ok(chunk);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Whether a CompleteMultipartUpload "failure" is a success whose XML root is `CompleteMultipartUploadResponse`
/// instead of `CompleteMultipartUploadResult` (moto 5.x does this; the SDK refuses to parse it). Only a
/// 200 response without an error code whose body starts with that root qualifies: S3's 200-with-`<Error>`
/// responses have a code and stay errors.
fn is_misnamed_complete_result<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let SdkError::ServiceError(service) = err else { return false };
    let raw = service.raw();
    if raw.status().as_u16() != 200 || err.code().is_some() {
        return false;
    }
    let Some(body) = raw.body().bytes() else { return false };
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let root = text
        .trim_start()
        .strip_prefix("<?xml")
        .map_or(text.trim_start(), |rest| rest.split_once("?>").map_or("", |(_, after)| after.trim_start()));
    root.starts_with("<CompleteMultipartUploadResponse") && !text.contains("<Error>")
}

/// `err` and its sources as one line, `outer: inner: …`, leaving out a source whose text the previous
/// one already contains (wrappers often repeat their cause).
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut last = out.clone();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cur = e.source();
    }
    out
}

/// The first error of type `T` in the source chain of `err` (including `err` itself).
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<()> {
        let len = body.len() as i64;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .content_length(len)
            .body(ByteStream::from(body));
        if opts.if_none_match {
            req = req.if_none_match("*");
        }
        req.send().await.map_err(|e| self.map_err("put", key, e))?;
        Ok(())
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end {
            return Err(Error::Store {
                op: "get_range",
                key: key.to_string(),
                detail: format!("range={}..{} is inverted", range.start, range.end),
            });
        }
        if range.start == range.end {
            // A Range header cannot express an empty range: check existence and bounds instead.
            let size = self.head(key).await?.size;
            return if satisfiable(&range, size) {
                Ok(Bytes::new())
            } else {
                Err(self.unsatisfiable(key, &range, Some(size)))
            };
        }
        self.get_object("get_range", key, Some(&range)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_object("get", key, None).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err("head", key, e))?;
        let size = to_size(out.content_length()).ok_or_else(|| Error::Store {
            op: "head",
            key: key.to_string(),
            detail: format!("response without a valid Content-Length bucket={}", self.settings.bucket),
        })?;
        Ok(ObjectMeta { key: key.to_string(), size })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.client.delete_object().bucket(&self.settings.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err("delete", key, e) {
                // S3 answers 204 for a missing key; some compatible servers say 404 NoSuchKey.
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| match self.map_err("list", prefix, e) {
                    // A listing never misses: a 404 is the bucket (or the endpoint), not an object.
                    Error::NotFound { key } => Error::Store {
                        op: "list",
                        key,
                        detail: format!(
                            "listing answered 404: bucket={} missing or endpoint={} is not an S3 API",
                            self.settings.bucket, self.endpoint
                        ),
                    },
                    other => other,
                })?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                // Servers may list more than asked (S3 Express, some proxies): keep the contract.
                if !key.starts_with(prefix) {
                    continue;
                }
                let size = to_size(obj.size()).ok_or_else(|| Error::Store {
                    op: "list",
                    key: key.to_string(),
                    detail: format!("listing entry without a valid size bucket={}", self.settings.bucket),
                })?;
                out.push(ObjectMeta { key: key.to_string(), size });
            }
            if !page.is_truncated().unwrap_or(false) {
                return Ok(out);
            }
            match page.next_continuation_token() {
                Some(next) if !next.is_empty() && token.as_deref() != Some(next) => token = Some(next.to_string()),
                other => {
                    return Err(Error::Store {
                        op: "list",
                        key: prefix.to_string(),
                        detail: format!(
                            "truncated listing with an unusable continuation token={other:?} bucket={}",
                            self.settings.bucket
                        ),
                    })
                }
            }
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err("create_multipart", key, e))?;
        match out.upload_id() {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(Error::Store {
                op: "create_multipart",
                key: key.to_string(),
                detail: format!("response without an upload id bucket={}", self.settings.bucket),
            }),
        }
    }

    async fn put_part(&self, key: &str, upload_id: &str, part_number: i32, body: Bytes) -> Result<CompletedPart> {
        let len = body.len() as i64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.settings.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(len)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| match self.map_err("put_part", key, e) {
                Error::NotFound { key } => Error::NotFound { key: format!("{key} upload_id={upload_id}") },
                other => other,
            })?;
        match out.e_tag() {
            Some(etag) if !etag.is_empty() => Ok(CompletedPart { part_number, etag: etag.to_string() }),
            _ => Err(Error::Store {
                op: "put_part",
                key: key.to_string(),
                detail: format!(
                    "response without an ETag upload_id={upload_id} part={part_number} bucket={}",
                    self.settings.bucket
                ),
            }),
        }
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        opts: PutOptions,
    ) -> Result<()> {
        let parts = parts
            .into_iter()
            .map(|p| S3CompletedPart::builder().part_number(p.part_number).e_tag(p.etag).build())
            .collect();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        if opts.if_none_match {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_misnamed_complete_result(&e) => {
                tracing::debug!(key, upload_id, "server answered CompleteMultipartUploadResponse; treated as success");
                Ok(())
            }
            Err(e) => Err(match self.map_err("complete_multipart", key, e) {
                Error::NotFound { key } => Error::NotFound { key: format!("{key} upload_id={upload_id}") },
                other => other,
            }),
        }
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err("abort_multipart", key, e) {
                // NoSuchUpload: already completed or aborted.
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> S3Settings {
        S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("SECRET".into()),
            force_path_style: true,
            ..S3Settings::new("bucket", "us-east-1")
        }
    }

    #[test]
    fn classify_by_code_before_status() {
        assert_eq!(classify(Some(404), Some("NoSuchKey")), Class::NotFound);
        assert_eq!(classify(Some(404), Some("NoSuchBucket")), Class::Store);
        assert_eq!(classify(Some(404), Some("NoSuchUpload")), Class::NotFound);
        assert_eq!(classify(Some(404), None), Class::NotFound);
        assert_eq!(classify(Some(412), Some("PreconditionFailed")), Class::AlreadyExists);
        assert_eq!(classify(Some(412), None), Class::AlreadyExists);
        assert_eq!(classify(Some(409), Some("ConditionalRequestConflict")), Class::Transient);
        assert_eq!(classify(Some(400), Some("RequestTimeout")), Class::Transient);
        assert_eq!(classify(Some(503), Some("SlowDown")), Class::Transient);
        assert_eq!(classify(Some(429), None), Class::Transient);
        assert_eq!(classify(Some(500), Some("InternalError")), Class::Transient);
        assert_eq!(classify(Some(502), None), Class::Transient);
        assert_eq!(classify(Some(503), None), Class::Transient);
        assert_eq!(classify(Some(400), Some("ExpiredToken")), Class::Transient);
        assert_eq!(classify(Some(403), Some("AccessDenied")), Class::Store);
        assert_eq!(classify(Some(403), Some("InvalidAccessKeyId")), Class::Store);
        assert_eq!(classify(Some(403), Some("SignatureDoesNotMatch")), Class::Store);
        assert_eq!(classify(Some(403), None), Class::Store);
        assert_eq!(classify(Some(400), Some("InvalidArgument")), Class::Store);
        assert_eq!(classify(Some(400), Some("SomethingNew")), Class::Store);
        assert_eq!(classify(Some(416), Some("InvalidRange")), Class::Store);
        assert_eq!(classify(Some(501), Some("NotImplemented")), Class::Store);
        assert_eq!(classify(Some(501), None), Class::Store);
        assert_eq!(classify(Some(301), None), Class::Store);
        assert_eq!(classify(Some(307), None), Class::Transient);
        assert_eq!(classify(None, None), Class::Transient);
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9)));
        assert_eq!(parse_content_range("bytes 90-99/*"), Some((90, 99)));
        assert_eq!(parse_content_range(" bytes  5-5/6 "), Some((5, 5)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
        assert_eq!(parse_content_range(""), None);
        assert_eq!(parse_content_range("bytes 0-x/1"), None);
    }

    #[test]
    fn range_headers() {
        assert_eq!(range_header(&(0..10)), "bytes=0-9");
        assert_eq!(range_header(&(5..6)), "bytes=5-5");
        assert_eq!(range_header(&(7..u64::MAX)), "bytes=7-");
        assert_eq!(range_header(&(0..(i64::MAX as u64 + 1))), "bytes=0-9223372036854775807");
        assert!(satisfiable(&(0..0), 0));
        assert!(satisfiable(&(0..10), 0));
        assert!(!satisfiable(&(1..2), 0));
        assert!(satisfiable(&(9..10), 10));
        assert!(!satisfiable(&(10..11), 10));
    }

    #[test]
    fn settings_validation_names_the_property() {
        let check = |s: S3Settings, property: &str| {
            let e = s.validate().unwrap_err();
            assert!(matches!(&e, Error::Config { key, .. } if key == property), "{e}");
        };
        check(S3Settings::default(), "rsm.config.s3.bucket");
        check(S3Settings { region: " ".into(), ..settings() }, "rsm.config.s3.region");
        check(S3Settings { endpoint: Some("127.0.0.1:9000".into()), ..settings() }, "rsm.config.s3.endpoint");
        check(S3Settings { endpoint: Some("http://".into()), ..settings() }, "rsm.config.s3.endpoint");
        check(S3Settings { secret_access_key: None, ..settings() }, "rsm.config.s3.secret.access.key");
        check(S3Settings { access_key_id: Some(String::new()), ..settings() }, "rsm.config.s3.access.key.id");
        check(
            S3Settings { access_key_id: None, secret_access_key: None, session_token: Some("t".into()), ..settings() },
            "rsm.config.s3.session.token",
        );
        check(S3Settings { max_attempts: 0, ..settings() }, "rsm.config.s3.max.attempts");
        check(S3Settings { read_timeout: Duration::ZERO, ..settings() }, "rsm.config.s3.read.timeout.ms");
        settings().validate().unwrap();
        S3Settings { access_key_id: None, secret_access_key: None, ..settings() }.validate().unwrap();
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = S3Settings { session_token: Some("TOKEN".into()), ..settings() };
        let d = format!("{s:?}");
        assert!(!d.contains("SECRET") && !d.contains("TOKEN"), "{d}");
        assert!(d.contains("AKID") && d.contains("<redacted>"), "{d}");
    }

    #[tokio::test]
    async fn new_builds_without_network() {
        let store = S3Store::new(settings()).await.unwrap();
        assert_eq!(store.settings().bucket, "bucket");
        assert!(format!("{store:?}").contains("bucket"));
        let e = S3Store::new(S3Settings { bucket: String::new(), ..settings() }).await.unwrap_err();
        assert!(e.to_string().contains("rsm.config.s3.bucket"), "{e}");
    }

    #[tokio::test]
    async fn inverted_range_is_a_store_error_without_a_request() {
        let store = S3Store::new(settings()).await.unwrap();
        #[allow(clippy::reversed_empty_ranges)]
        let e = store.get_range("k", 10..5).await.unwrap_err();
        assert!(matches!(e, Error::Store { op: "get_range", .. }), "{e}");
    }

    mod mapping {
        use super::*;
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
        use aws_sdk_s3::operation::get_object::GetObjectError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;

        fn response(status: u16, body: &'static str) -> HttpResponse {
            let mut r = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
            r.headers_mut().insert("x-amz-request-id", "REQ123");
            r
        }

        fn service(status: u16, code: Option<&str>, message: &str) -> SdkError<GetObjectError, HttpResponse> {
            let mut meta = ErrorMetadata::builder().message(message);
            if let Some(code) = code {
                meta = meta.code(code);
            }
            SdkError::service_error(GetObjectError::generic(meta.build()), response(status, ""))
        }

        async fn store() -> S3Store {
            S3Store::new(settings()).await.unwrap()
        }

        #[tokio::test]
        async fn service_errors() {
            let s = store().await;
            let e = s.map_err("get", "a/b", service(404, Some("NoSuchKey"), "The specified key does not exist."));
            assert!(matches!(&e, Error::NotFound { key } if key == "a/b"), "{e}");
            let e = s.map_err("put", "a/b", service(412, Some("PreconditionFailed"), "At least one..."));
            assert!(matches!(&e, Error::AlreadyExists { key } if key == "a/b"), "{e}");
            let e = s.map_err("put", "a/b", service(409, Some("ConditionalRequestConflict"), "conflict"));
            assert!(matches!(e, Error::Transient { op: "put", .. }), "{e}");
            let e = s.map_err("get", "a/b", service(503, Some("SlowDown"), "Please reduce your request rate."));
            assert!(matches!(e, Error::Transient { .. }), "{e}");
            let e = s.map_err("head", "a/b", service(404, None, ""));
            assert!(e.is_not_found(), "{e}");

            let e = s.map_err("get", "a/b", service(403, Some("AccessDenied"), "Access Denied"));
            let msg = e.to_string();
            assert!(matches!(e, Error::Store { .. }), "{msg}");
            for part in [
                "op=get",
                "key=a/b",
                "AccessDenied: Access Denied",
                "status=403",
                "bucket=bucket",
                "endpoint=http://127.0.0.1:1",
                "request_id=REQ123",
            ] {
                assert!(msg.contains(part), "missing {part:?} in {msg}");
            }
            let msg = s
                .map_err("get", "k", service(404, Some("NoSuchBucket"), "The specified bucket does not exist"))
                .to_string();
            assert!(
                msg.contains("bucket=bucket does not exist (NoSuchBucket: The specified bucket does not exist)"),
                "{msg}"
            );
            assert_eq!(msg.matches("bucket=bucket").count(), 1, "{msg}");
            let msg = s.map_err("get", "k", service(403, Some("InvalidAccessKeyId"), "unknown key")).to_string();
            assert!(msg.contains("credentials rejected") && msg.contains("rsm.config.s3.access.key.id"), "{msg}");
            let msg = s.map_err("head", "k", service(403, None, "")).to_string();
            assert!(msg.contains("status=403") && msg.contains("hint: access denied"), "{msg}");
            let e = s.map_err("get", "k", service(416, Some("InvalidRange"), "The requested range is not satisfiable"));
            assert!(matches!(e, Error::Store { .. }), "{e}");
        }

        #[tokio::test]
        async fn transport_errors() {
            let s = store().await;
            let e = s.map_err::<GetObjectError>("get", "k", SdkError::timeout_error("attempt timeout"));
            assert!(matches!(e, Error::Transient { op: "get", .. }), "{e}");
            assert!(e.to_string().contains("timed out"), "{e}");
            let io =
                ConnectorError::io(Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused")));
            let e = s.map_err::<GetObjectError>("put", "k", SdkError::dispatch_failure(io));
            assert!(matches!(e, Error::Transient { .. }), "{e}");
            assert!(e.to_string().contains("refused") && e.to_string().contains("endpoint=http://127.0.0.1:1"), "{e}");
            let timeout = ConnectorError::timeout("connect timeout".into());
            let e = s.map_err::<GetObjectError>("put", "k", SdkError::dispatch_failure(timeout));
            assert!(matches!(e, Error::Transient { .. }), "{e}");
            let user = ConnectorError::user("bad uri".into());
            let e = s.map_err::<GetObjectError>("put", "k", SdkError::dispatch_failure(user));
            assert!(matches!(e, Error::Store { .. }), "{e}");
            let e = s.map_err::<GetObjectError>("put", "k", SdkError::construction_failure("missing field"));
            assert!(matches!(e, Error::Store { .. }), "{e}");
            let e =
                s.map_err::<GetObjectError>("get", "k", SdkError::response_error("truncated xml", response(200, "<x")));
            assert!(matches!(e, Error::Transient { .. }), "{e}");
        }

        #[tokio::test]
        async fn credential_errors() {
            let s = store().await;
            let not_loaded = CredentialsError::not_loaded("no credentials in the environment");
            let err = SdkError::<GetObjectError, HttpResponse>::dispatch_failure(ConnectorError::other(
                Box::new(not_loaded),
                None,
            ));
            let e = s.map_err("get", "k", err);
            assert!(matches!(e, Error::Store { .. }), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("no usable credentials") && msg.contains("no credentials in the environment"),
                "{msg}"
            );
            let timed_out = CredentialsError::provider_timed_out(Duration::from_secs(5));
            let err = SdkError::<GetObjectError, HttpResponse>::dispatch_failure(ConnectorError::other(
                Box::new(timed_out),
                None,
            ));
            assert!(matches!(s.map_err("get", "k", err), Error::Transient { .. }));
        }

        #[test]
        fn misnamed_complete_result_is_success_but_error_documents_are_not() {
            let err = |status: u16, code: Option<&str>, body: &'static str| {
                let mut meta = ErrorMetadata::builder();
                if let Some(code) = code {
                    meta = meta.code(code);
                }
                SdkError::<CompleteMultipartUploadError, HttpResponse>::service_error(
                    CompleteMultipartUploadError::generic(meta.build()),
                    response(status, body),
                )
            };
            let moto = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<CompleteMultipartUploadResponse xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Key>k</Key></CompleteMultipartUploadResponse>";
            assert!(is_misnamed_complete_result(&err(200, None, moto)));
            assert!(!is_misnamed_complete_result(&err(
                200,
                Some("InternalError"),
                "<Error><Code>InternalError</Code></Error>"
            )));
            assert!(!is_misnamed_complete_result(&err(200, None, "<Error><Code>InternalError</Code></Error>")));
            assert!(!is_misnamed_complete_result(&err(500, None, moto)));
            assert!(!is_misnamed_complete_result(&err(200, None, "")));
        }

        #[test]
        fn error_chain_skips_repeats() {
            let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            let outer = ConnectorError::io(Box::new(inner));
            let text = error_chain(&outer);
            assert!(text.contains("connection refused"), "{text}");
            assert_eq!(text.matches("connection refused").count(), 1, "{text}");
        }
    }

    #[tokio::test]
    async fn read_body_skips_and_truncates() {
        let body = || ByteStream::from(Bytes::from_static(b"0123456789"));
        assert_eq!(read_body(body(), 0, u64::MAX, Some(10)).await.unwrap(), Bytes::from_static(b"0123456789"));
        assert_eq!(read_body(body(), 3, 4, Some(4)).await.unwrap(), Bytes::from_static(b"3456"));
        assert_eq!(read_body(body(), 8, 10, None).await.unwrap(), Bytes::from_static(b"89"));
        assert_eq!(read_body(body(), 0, 10, Some(1 << 40)).await.unwrap().len(), 10);
        assert!(read_body(body(), 20, 5, None).await.unwrap().is_empty());
    }
}
