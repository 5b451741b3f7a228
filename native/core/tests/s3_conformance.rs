//! The object-store conformance suite and start-up checks against a real S3-compatible server.
//!
//! Environment:
//! * `FASTTIER_TEST_S3_ENDPOINT` — e.g. `http://127.0.0.1:9000` (region us-east-1, path-style);
//! * `FASTTIER_TEST_S3_BUCKET` — an existing bucket the tests may write to (default `fasttier-test`);
//! * `FASTTIER_TEST_S3_ACCESS_KEY`, `FASTTIER_TEST_S3_SECRET_KEY` — its credentials.
//!
//! Without `FASTTIER_TEST_S3_ENDPOINT` the server tests print "skipped" and pass, except when `CI=true`:
//! then they fail, so that CI cannot silently skip them. The unreachable-endpoint test needs no server.

use std::time::{Duration, Instant};

use fasttier_core::error::{Error, ErrorClass};
use fasttier_core::store::conformance;
use fasttier_core::store::s3::{S3Settings, S3Store};
use fasttier_core::store::ObjectStore;

struct Server {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

/// The server from the environment; `None` (after printing why) when the tests should be skipped.
///
/// # Panics
///
/// When the endpoint is unset and `CI=true`, or when it is set without credentials.
fn server(test: &str) -> Option<Server> {
    let endpoint = std::env::var("FASTTIER_TEST_S3_ENDPOINT").ok().filter(|v| !v.is_empty());
    let Some(endpoint) = endpoint else {
        let ci = std::env::var("CI").map(|v| v.eq_ignore_ascii_case("true") || v == "1").unwrap_or(false);
        assert!(
            !ci,
            "{test}: FASTTIER_TEST_S3_ENDPOINT is not set but CI=true: the S3 tests must not be skipped in CI"
        );
        eprintln!("{test}: skipped: set FASTTIER_TEST_S3_ENDPOINT (and FASTTIER_TEST_S3_BUCKET, FASTTIER_TEST_S3_ACCESS_KEY, FASTTIER_TEST_S3_SECRET_KEY) to run it against an S3-compatible server");
        return None;
    };
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("{test}: FASTTIER_TEST_S3_ENDPOINT is set, so {name} must be set too"))
    };
    Some(Server {
        endpoint,
        bucket: std::env::var("FASTTIER_TEST_S3_BUCKET")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "fasttier-test".into()),
        access_key: var("FASTTIER_TEST_S3_ACCESS_KEY"),
        secret_key: var("FASTTIER_TEST_S3_SECRET_KEY"),
    })
}

fn settings(s: &Server) -> S3Settings {
    S3Settings {
        bucket: s.bucket.clone(),
        region: "us-east-1".into(),
        endpoint: Some(s.endpoint.clone()),
        force_path_style: true,
        access_key_id: Some(s.access_key.clone()),
        secret_access_key: Some(s.secret_key.clone()),
        session_token: None,
        connect_timeout: Duration::from_secs(3),
        read_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(60),
        operation_timeout: Duration::from_secs(180),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(50),
    }
}

fn run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_passes_conformance() {
    let Some(server) = server("s3_store_passes_conformance") else { return };
    let store = S3Store::new(settings(&server)).await.expect("S3Store::new");
    store.check_bucket().await.expect("check_bucket of the test bucket");
    let prefix = format!("fasttier-conformance/{}/", run_id());
    let started = Instant::now();
    conformance::run_all(&store, &prefix).await;
    eprintln!("conformance against {} passed in {:?}", server.endpoint, started.elapsed());
    let left = store.list(&prefix).await.expect("list after the suite");
    assert!(left.is_empty(), "the suite left objects behind: {left:?}");
}

#[tokio::test]
async fn wrong_credentials_are_named() {
    let Some(server) = server("wrong_credentials_are_named") else { return };

    // An access key the server does not know.
    let store = S3Store::new(S3Settings {
        access_key_id: Some(format!("NOSUCHKEY{}", run_id().to_uppercase())),
        ..settings(&server)
    })
    .await
    .expect("S3Store::new");
    let err = store.check_bucket().await.expect_err(
        "check_bucket with an unknown access key must fail: this server accepts any credentials \
         (moto does unless started with INITIAL_NO_AUTH_ACTION_COUNT); the CI server (MinIO) checks them",
    );
    let msg = err.to_string();
    eprintln!("unknown access key: {msg}");
    assert_eq!(err.class(), ErrorClass::Fatal, "{msg}");
    assert!(msg.contains("op=check_bucket"), "{msg}");
    assert!(msg.contains(&server.bucket) && msg.contains(&server.endpoint), "{msg}");
    assert!(
        msg.contains("InvalidAccessKeyId") || msg.contains("credentials rejected") || msg.contains("AccessDenied"),
        "the message must name the credential problem: {msg}"
    );

    // A known access key with the wrong secret.
    let store =
        S3Store::new(S3Settings { secret_access_key: Some("wrong-secret-0123456789".into()), ..settings(&server) })
            .await
            .expect("S3Store::new");
    let err = store.check_bucket().await.expect_err("check_bucket with a wrong secret must fail");
    let msg = err.to_string();
    eprintln!("wrong secret: {msg}");
    assert_eq!(err.class(), ErrorClass::Fatal, "{msg}");
    assert!(
        msg.contains("SignatureDoesNotMatch") || msg.contains("credentials rejected") || msg.contains("AccessDenied"),
        "the message must name the credential problem: {msg}"
    );
    // Object operations fail the same way (fatal, naming op and key).
    let err = store.get("some/key").await.expect_err("get with a wrong secret must fail");
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert!(err.to_string().contains("op=get key=some/key"), "{err}");
}

#[tokio::test]
async fn missing_bucket_is_named() {
    let Some(server) = server("missing_bucket_is_named") else { return };
    let bucket = format!("fasttier-missing-{}", run_id());
    let store = S3Store::new(S3Settings { bucket: bucket.clone(), ..settings(&server) }).await.expect("S3Store::new");
    let err = store.check_bucket().await.expect_err("check_bucket of a missing bucket must fail");
    let msg = err.to_string();
    eprintln!("missing bucket: {msg}");
    assert!(matches!(err, Error::Store { .. }), "{msg}");
    assert!(msg.contains(&format!("bucket={bucket} does not exist")), "{msg}");
    assert!(msg.contains("NoSuchBucket") && msg.contains(&server.endpoint), "{msg}");
    // A listing of a missing bucket is not an empty listing.
    let err = store.list("x/").await.expect_err("list in a missing bucket must fail");
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert!(err.to_string().contains(&bucket), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_is_transient_and_quick() {
    // A loopback port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local_addr").port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = S3Store::new(short_timeouts(endpoint.clone())).await.expect("S3Store::new");

    let started = Instant::now();
    let err = store.check_bucket().await.expect_err("check_bucket of an unreachable endpoint must fail");
    let msg = err.to_string();
    eprintln!("unreachable endpoint: {msg} (after {:?})", started.elapsed());
    assert!(matches!(err, Error::Transient { op: "check_bucket", .. }), "{msg}");
    assert!(msg.contains(&endpoint), "the message must name the endpoint: {msg}");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());

    let started = Instant::now();
    let err = store.get_range("a/b", 0..10).await.expect_err("get_range of an unreachable endpoint must fail");
    assert_eq!(err.class(), ErrorClass::Retriable, "{err}");
    assert!(err.to_string().contains("op=get_range key=a/b"), "{err}");
    // Two SDK attempts, and get_range's own body-read retry: well within the operation timeout each.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    let err = store.put("a/b", bytes::Bytes::from_static(b"x"), Default::default()).await.expect_err("put must fail");
    assert_eq!(err.class(), ErrorClass::Retriable, "{err}");
}

fn short_timeouts(endpoint: String) -> S3Settings {
    S3Settings {
        bucket: "fasttier-unreachable".into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint),
        force_path_style: true,
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("secret".into()),
        session_token: None,
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        attempt_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(3),
        max_attempts: 2,
        initial_backoff: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn silent_endpoint_times_out_as_transient() {
    // A listener that never accepts: the kernel completes the TCP handshake, the request is sent, and no
    // answer ever comes. Only the read/attempt timeouts end this.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("local_addr"));
    let store = S3Store::new(short_timeouts(endpoint.clone())).await.expect("S3Store::new");

    let started = Instant::now();
    let err = store.get("a/b").await.expect_err("get from a silent endpoint must fail");
    let elapsed = started.elapsed();
    eprintln!("silent endpoint: {err} (after {elapsed:?})");
    assert!(matches!(err, Error::Transient { op: "get", .. }), "{err}");
    assert!(err.to_string().contains("key=a/b") && err.to_string().contains(&endpoint), "{err}");
    // 2 attempts of at most read_timeout/attempt_timeout each, bounded by operation_timeout = 3 s.
    assert!(elapsed >= Duration::from_millis(500), "returned before any timeout could fire: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let started = Instant::now();
    let err = store.check_bucket().await.expect_err("check_bucket of a silent endpoint must fail");
    assert!(matches!(err, Error::Transient { op: "check_bucket", .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    drop(listener);
}

/// A loopback HTTP server that answers every request with a 200 announcing `Content-Length: 100`, sends
/// 10 bytes of body and then, depending on `close`, closes the connection or stalls forever. Returns the
/// endpoint and a counter of requests served.
async fn half_body_server(close: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("local_addr"));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/octet-stream\r\n\r\n";
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&[7u8; 10]).await;
                let _ = sock.flush().await;
                if !close {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    (endpoint, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_body_is_transient_and_bounded() {
    let (endpoint, served) = half_body_server(false).await;
    let store = S3Store::new(short_timeouts(endpoint)).await.expect("S3Store::new");
    let started = Instant::now();
    let err = store.get("a/b").await.expect_err("a body that stalls must fail");
    let elapsed = started.elapsed();
    eprintln!("stalled body: {err} (after {elapsed:?}, {} requests)", served.load(std::sync::atomic::Ordering::SeqCst));
    assert!(matches!(err, Error::Transient { op: "get", .. }), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_is_retried_then_transient() {
    let (endpoint, served) = half_body_server(true).await;
    let store = S3Store::new(short_timeouts(endpoint)).await.expect("S3Store::new");
    let err = store.get_range("a/b", 0..100).await.expect_err("a truncated body must fail");
    eprintln!("truncated body: {err} ({} requests)", served.load(std::sync::atomic::Ordering::SeqCst));
    assert!(matches!(err, Error::Transient { op: "get_range", .. }), "{err}");
    // max_attempts = 2: the body read is retried once.
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2, "{err}");
}
