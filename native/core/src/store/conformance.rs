//! The conformance suite every [`ObjectStore`] implementation must pass.
//!
//! [`run_all`] checks each point of the trait contract with assertions that fail loudly, naming the check,
//! the key and the error. It is public (not `cfg(test)`) so that integration tests can run it against a
//! real S3-compatible server. Every check works under `prefix` plus a random suffix, so reruns against a
//! persistent server never collide, and deletes what it created when it passes.
//!
//! # Panics
//!
//! Every function here panics (with a message naming the failed check) when the store violates the
//! contract or returns an unexpected error: they are test code.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use rand::RngCore;

use super::{ObjectMeta, ObjectStore, PutOptions};
use crate::error::{Error, Result};

/// 1 MiB.
const MIB: usize = 1024 * 1024;
/// The smallest part size S3 accepts for every part but the last.
const MIN_PART: usize = 5 * MIB;
/// Number of objects for the listing-pagination check (S3 returns at most 1000 keys per page).
const PAGINATION_OBJECTS: usize = 1100;
/// Concurrent requests when putting or deleting many objects.
const CONCURRENCY: usize = 8;

const PLAIN: PutOptions = PutOptions { if_none_match: false };
const CREATE: PutOptions = PutOptions { if_none_match: true };

/// Runs every check of the suite, one after the other.
///
/// `prefix` is prepended to every key (e.g. `"conformance/"`); each check adds its own name and a random
/// suffix under it.
pub async fn run_all<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    put_get_round_trip(store, prefix).await;
    overwrite(store, prefix).await;
    conditional_create(store, prefix).await;
    get_range(store, prefix).await;
    head_and_not_found(store, prefix).await;
    delete_is_idempotent(store, prefix).await;
    list_by_prefix(store, prefix).await;
    list_paginates(store, prefix).await;
    multipart_round_trip(store, prefix).await;
    multipart_abort(store, prefix).await;
    multipart_conditional_complete(store, prefix).await;
}

/// Put then get returns the same bytes, for an empty, a 1-byte and a multi-MiB object.
pub async fn put_get_round_trip<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "round-trip");
    for (name, len) in [("empty", 0), ("one", 1), ("small", 4097), ("large", 3 * MIB + 123)] {
        let key = format!("{base}{name}");
        let data = random_bytes(len);
        ok(store.put(&key, data.clone(), PLAIN).await, "put", &key);
        let got = ok(store.get(&key).await, "get", &key);
        assert_same(&got, &data, "get after put", &key);
        let meta = ok(store.head(&key).await, "head", &key);
        assert_eq!(meta.key, key, "head returned the wrong key");
        assert_eq!(meta.size, len as u64, "head size after put key={key}");
    }
    cleanup(store, &base).await;
}

/// A plain put replaces an existing object.
pub async fn overwrite<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "overwrite");
    let key = format!("{base}obj");
    let first = random_bytes(1000);
    let second = random_bytes(10);
    ok(store.put(&key, first, PLAIN).await, "put first", &key);
    ok(store.put(&key, second.clone(), PLAIN).await, "put second", &key);
    assert_same(&ok(store.get(&key).await, "get", &key), &second, "get after overwrite", &key);
    assert_eq!(ok(store.head(&key).await, "head", &key).size, 10, "head size after overwrite key={key}");
    cleanup(store, &base).await;
}

/// `if_none_match` creates a new object, refuses an existing one with `AlreadyExists` (leaving it intact),
/// and creates again once the object was deleted.
pub async fn conditional_create<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "conditional");
    let key = format!("{base}obj");
    let original = random_bytes(100);
    ok(store.put(&key, original.clone(), CREATE).await, "conditional put of a new key", &key);
    let err = expect_err(store.put(&key, random_bytes(50), CREATE).await, "conditional put of an existing key", &key);
    assert!(
        matches!(&err, Error::AlreadyExists { key: k } if *k == key),
        "conditional put of an existing key must be AlreadyExists with key={key}, got: {err}"
    );
    assert_same(&ok(store.get(&key).await, "get", &key), &original, "object after refused conditional put", &key);
    // A plain put still overwrites.
    let replaced = random_bytes(7);
    ok(store.put(&key, replaced.clone(), PLAIN).await, "plain put over existing key", &key);
    assert_same(&ok(store.get(&key).await, "get", &key), &replaced, "object after plain put", &key);
    ok(store.delete(&key).await, "delete", &key);
    ok(store.put(&key, original.clone(), CREATE).await, "conditional put after delete", &key);
    assert_same(&ok(store.get(&key).await, "get", &key), &original, "object after re-create", &key);
    // An empty object is created conditionally too.
    let empty_key = format!("{base}empty");
    ok(store.put(&empty_key, Bytes::new(), CREATE).await, "conditional put of an empty object", &empty_key);
    let err = expect_err(store.put(&empty_key, Bytes::new(), CREATE).await, "second conditional put", &empty_key);
    assert!(matches!(err, Error::AlreadyExists { .. }), "expected AlreadyExists key={empty_key}, got: {err}");
    cleanup(store, &base).await;
}

/// Ranged reads: middle, up to the end, end beyond the size (clamped), empty ranges, ranges starting at or
/// beyond the end (a `Store` error, not `NotFound`), and a missing key (`NotFound`).
pub async fn get_range<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "range");
    let key = format!("{base}obj");
    let data = random_bytes(10_000);
    ok(store.put(&key, data.clone(), PLAIN).await, "put", &key);
    let len = data.len() as u64;

    let cases: [(Range<u64>, Range<usize>); 8] = [
        (0..len, 0..10_000),
        (0..1, 0..1),
        (100..2_000, 100..2_000),
        (9_000..len, 9_000..10_000),
        (len - 1..len, 9_999..10_000),
        (9_000..20_000, 9_000..10_000),
        (0..u64::MAX, 0..10_000),
        (5..5, 5..5),
    ];
    for (range, expected) in cases {
        let what = format!("get_range {}..{}", range.start, range.end);
        let got = ok(store.get_range(&key, range).await, &what, &key);
        assert_same(&got, &data.slice(expected), &what, &key);
    }
    for range in [len..len + 1, len..len, len + 5..len + 100, 1 << 40..(1 << 40) + 1] {
        let what = format!("get_range {}..{} of a {len}-byte object", range.start, range.end);
        let err = expect_err(store.get_range(&key, range).await, &what, &key);
        assert!(
            matches!(err, Error::Store { .. }),
            "{what} must fail with a Store error (not satisfiable), got: {err} key={key}"
        );
    }

    // Empty object: an empty result for ranges starting at 0.
    let empty = format!("{base}empty");
    ok(store.put(&empty, Bytes::new(), PLAIN).await, "put empty", &empty);
    for range in [0..0, 0..10] {
        let what = format!("get_range {}..{} of an empty object", range.start, range.end);
        let got = ok(store.get_range(&empty, range).await, &what, &empty);
        assert!(got.is_empty(), "{what} returned {} bytes key={empty}", got.len());
    }

    // Missing key.
    let missing = format!("{base}missing");
    for range in [0..10, 5..5] {
        let what = format!("get_range {}..{} of a missing key", range.start, range.end);
        let err = expect_err(store.get_range(&missing, range).await, &what, &missing);
        assert!(err.is_not_found(), "{what} must be NotFound, got: {err}");
    }
    cleanup(store, &base).await;
}

/// `head` reports sizes; `get`, `head` and `get_range` of a missing key are `NotFound`.
pub async fn head_and_not_found<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "head");
    for len in [0usize, 1, 1000, MIB + 1] {
        let key = format!("{base}obj-{len}");
        ok(store.put(&key, random_bytes(len), PLAIN).await, "put", &key);
        let meta = ok(store.head(&key).await, "head", &key);
        assert_eq!(meta.size, len as u64, "head size key={key}");
        assert_eq!(meta.key, key, "head key");
    }
    for key in [format!("{base}missing"), format!("{base}obj-1/child"), format!("{base}obj-")] {
        let err = expect_err(store.get(&key).await, "get of a missing key", &key);
        assert!(err.is_not_found(), "get of a missing key must be NotFound, got: {err}");
        let err = expect_err(store.head(&key).await, "head of a missing key", &key);
        assert!(err.is_not_found(), "head of a missing key must be NotFound, got: {err}");
        let err = expect_err(store.get_range(&key, 0..1).await, "get_range of a missing key", &key);
        assert!(err.is_not_found(), "get_range of a missing key must be NotFound, got: {err}");
    }
    cleanup(store, &base).await;
}

/// `delete` removes an object and succeeds for a missing key, repeatedly.
pub async fn delete_is_idempotent<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "delete");
    let key = format!("{base}obj");
    ok(store.delete(&key).await, "delete of a never-created key", &key);
    ok(store.put(&key, random_bytes(10), PLAIN).await, "put", &key);
    let sibling = format!("{base}obj2");
    ok(store.put(&sibling, random_bytes(3), PLAIN).await, "put sibling", &sibling);
    ok(store.delete(&key).await, "delete", &key);
    let err = expect_err(store.get(&key).await, "get after delete", &key);
    assert!(err.is_not_found(), "get after delete must be NotFound, got: {err}");
    let err = expect_err(store.head(&key).await, "head after delete", &key);
    assert!(err.is_not_found(), "head after delete must be NotFound, got: {err}");
    ok(store.delete(&key).await, "second delete", &key);
    // Deleting one key leaves the other alone.
    assert_eq!(ok(store.head(&sibling).await, "head sibling", &sibling).size, 3, "sibling survives delete");
    ok(store.delete(&sibling).await, "delete sibling", &sibling);
    assert!(ok(store.list(&base).await, "list", &base).is_empty(), "nothing left under {base}");
}

/// `list` returns exactly the objects under a prefix (in any order), with their sizes, including keys with
/// `/`, `=`, `.`, `-` and `_`, and nothing for a prefix without objects.
///
/// No key here is a whole path segment prefix of another (`a` next to `a/b`): MinIO stores objects as
/// directories and leaves `a/b` out of listings when an object `a` exists (both stay readable). Key
/// layouts used with this trait must avoid that pattern.
pub async fn list_by_prefix<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "list");
    let inside = [
        "t/topic=a.b_c-d/partition=0/00000000000000000000.log",
        "t/topic=a.b_c-d/partition=0/00000000000000000000.index",
        "t/topic=a.b_c-d/partition=10/00000000000000001234.log",
        "t/topic=a.b_c-d/partition=1",
        "t/x=y=z",
        "t/",
    ];
    let outside = ["u/topic=a/partition=0", "s", "other=t/x"];
    for (i, name) in inside.iter().chain(outside.iter()).enumerate() {
        let key = format!("{base}{name}");
        ok(store.put(&key, random_bytes(i), PLAIN).await, "put", &key);
    }

    let check = |listed: Vec<ObjectMeta>, list_prefix: &str, expected: Vec<(String, u64)>| {
        let mut got: Vec<(String, u64)> = listed.into_iter().map(|m| (m.key, m.size)).collect();
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected, "list prefix={list_prefix}");
    };
    let with_sizes = |pred: &dyn Fn(&str) -> bool| -> Vec<(String, u64)> {
        inside
            .iter()
            .chain(outside.iter())
            .enumerate()
            .filter(|(_, n)| pred(n))
            .map(|(i, n)| (format!("{base}{n}"), i as u64))
            .collect()
    };

    for sub in ["t", "t/", "t/topic=a.b_c-d/", "t/topic=a.b_c-d/partition=1", "t/topic=a.b_c-d/partition=0/", "t/x="] {
        let p = format!("{base}{sub}");
        let listed = ok(store.list(&p).await, "list", &p);
        check(listed, &p, with_sizes(&|n: &str| n.starts_with(sub)));
    }
    // The whole base, and prefixes that match nothing.
    let listed = ok(store.list(&base).await, "list", &base);
    check(listed, &base, with_sizes(&|_| true));
    for sub in ["nothing", "t/topic=b", "t/x=y=z/", "T"] {
        let p = format!("{base}{sub}");
        let listed = ok(store.list(&p).await, "list", &p);
        assert!(listed.is_empty(), "list prefix={p} must be empty, got {listed:?}");
    }
    cleanup(store, &base).await;
}

/// `list` returns all of more than 1000 objects (S3 pages at 1000 keys).
pub async fn list_paginates<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "paginate");
    let keys: Vec<String> = (0..PAGINATION_OBJECTS).map(|i| format!("{base}k/{i:05}")).collect();
    for_each_concurrent(&keys, |key| async move {
        ok(store.put(key, Bytes::from(key.as_bytes()[key.len() - 1..].to_vec()), PLAIN).await, "put", key);
    })
    .await;
    let outside = format!("{base}l");
    ok(store.put(&outside, Bytes::from_static(b"x"), PLAIN).await, "put", &outside);

    let list_prefix = format!("{base}k/");
    let listed = ok(store.list(&list_prefix).await, "list", &list_prefix);
    assert_eq!(listed.len(), keys.len(), "list of {} objects prefix={list_prefix}", keys.len());
    let mut got: Vec<String> = listed.iter().map(|m| m.key.clone()).collect();
    got.sort();
    assert_eq!(got, keys, "list of {} objects prefix={list_prefix}", keys.len());
    assert!(listed.iter().all(|m| m.size == 1), "every listed object has size 1");

    let all = ok(store.list(&base).await, "list", &base);
    assert_eq!(all.len(), keys.len() + 1, "list prefix={base}");

    for_each_concurrent(&keys, |key| async move { ok(store.delete(key).await, "delete", key) }).await;
    ok(store.delete(&outside).await, "delete", &outside);
    assert!(ok(store.list(&base).await, "list", &base).is_empty(), "nothing left under {base}");
}

/// Multipart: two 5 MiB parts and a small last part give their concatenation, invisible until completion;
/// a conditional complete of a new key succeeds.
pub async fn multipart_round_trip<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "multipart");
    let key = format!("{base}obj");
    let parts_data = [random_bytes(MIN_PART), random_bytes(MIN_PART), random_bytes(1031)];
    let upload = ok(store.create_multipart(&key).await, "create_multipart", &key);
    assert!(!upload.is_empty(), "create_multipart returned an empty upload id key={key}");
    // Upload the parts out of order; completion orders them by part number.
    let mut parts = Vec::new();
    for i in [1usize, 0, 2] {
        let number = i as i32 + 1;
        let part = ok(store.put_part(&key, &upload, number, parts_data[i].clone()).await, "put_part", &key);
        assert_eq!(part.part_number, number, "put_part returns its part number");
        assert!(!part.etag.is_empty(), "put_part returns an etag");
        parts.push(part);
    }
    parts.sort_by_key(|p| p.part_number);

    // Invisible before completion.
    let err = expect_err(store.head(&key).await, "head before complete_multipart", &key);
    assert!(err.is_not_found(), "an incomplete multipart object must be NotFound, got: {err}");
    let err = expect_err(store.get(&key).await, "get before complete_multipart", &key);
    assert!(err.is_not_found(), "an incomplete multipart object must be NotFound, got: {err}");
    assert!(ok(store.list(&base).await, "list", &base).is_empty(), "an incomplete multipart object is not listed");

    ok(store.complete_multipart(&key, &upload, parts, PLAIN).await, "complete_multipart", &key);
    let mut expected = BytesMut::new();
    for p in &parts_data {
        expected.extend_from_slice(p);
    }
    let expected = expected.freeze();
    assert_same(&ok(store.get(&key).await, "get", &key), &expected, "multipart object", &key);
    assert_eq!(ok(store.head(&key).await, "head", &key).size, expected.len() as u64, "multipart size");
    // A range across the first part boundary.
    let range = (MIN_PART as u64 - 10)..(MIN_PART as u64 + 10);
    let got = ok(store.get_range(&key, range).await, "get_range across parts", &key);
    assert_same(&got, &expected.slice(MIN_PART - 10..MIN_PART + 10), "get_range across parts", &key);

    // Conditional complete of a new key; a single (small, hence last) part is allowed.
    let key2 = format!("{base}obj2");
    let data2 = random_bytes(999);
    let upload2 = ok(store.create_multipart(&key2).await, "create_multipart", &key2);
    let part = ok(store.put_part(&key2, &upload2, 1, data2.clone()).await, "put_part", &key2);
    ok(store.complete_multipart(&key2, &upload2, vec![part], CREATE).await, "conditional complete of a new key", &key2);
    assert_same(&ok(store.get(&key2).await, "get", &key2), &data2, "single-part multipart object", &key2);
    cleanup(store, &base).await;
}

/// Abort removes the upload (nothing becomes visible, completion fails afterwards) and is idempotent.
pub async fn multipart_abort<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "abort");
    let key = format!("{base}obj");
    let upload = ok(store.create_multipart(&key).await, "create_multipart", &key);
    let part = ok(store.put_part(&key, &upload, 1, random_bytes(1000)).await, "put_part", &key);
    ok(store.abort_multipart(&key, &upload).await, "abort_multipart", &key);
    ok(store.abort_multipart(&key, &upload).await, "second abort_multipart", &key);
    let err = expect_err(store.head(&key).await, "head after abort", &key);
    assert!(err.is_not_found(), "head after abort must be NotFound, got: {err}");
    assert!(ok(store.list(&base).await, "list", &base).is_empty(), "nothing listed after abort");
    let err = expect_err(
        store.complete_multipart(&key, &upload, vec![part], PLAIN).await,
        "complete_multipart after abort",
        &key,
    );
    assert!(!matches!(err, Error::AlreadyExists { .. }), "complete after abort: unexpected {err}");
    let err = expect_err(store.head(&key).await, "head after failed complete", &key);
    assert!(err.is_not_found(), "head after failed complete must be NotFound, got: {err}");

    // Abort of an upload without parts.
    let upload = ok(store.create_multipart(&key).await, "create_multipart", &key);
    ok(store.abort_multipart(&key, &upload).await, "abort_multipart without parts", &key);
    ok(store.abort_multipart(&key, &upload).await, "second abort_multipart without parts", &key);
    assert!(ok(store.list(&base).await, "list", &base).is_empty(), "nothing listed after abort");
}

/// A conditional complete onto an existing key is `AlreadyExists` and leaves the existing object intact.
pub async fn multipart_conditional_complete<S: ObjectStore + ?Sized>(store: &S, prefix: &str) {
    let base = unique(prefix, "mp-conditional");
    let key = format!("{base}obj");
    let existing = random_bytes(333);
    ok(store.put(&key, existing.clone(), PLAIN).await, "put", &key);
    let upload = ok(store.create_multipart(&key).await, "create_multipart", &key);
    let p1 = ok(store.put_part(&key, &upload, 1, random_bytes(MIN_PART)).await, "put_part", &key);
    let p2 = ok(store.put_part(&key, &upload, 2, random_bytes(17)).await, "put_part", &key);
    let err = expect_err(
        store.complete_multipart(&key, &upload, vec![p1, p2], CREATE).await,
        "conditional complete_multipart onto an existing key",
        &key,
    );
    assert!(
        matches!(&err, Error::AlreadyExists { key: k } if *k == key),
        "conditional complete onto an existing key must be AlreadyExists with key={key}, got: {err}"
    );
    assert_same(&ok(store.get(&key).await, "get", &key), &existing, "object after refused complete", &key);
    ok(store.abort_multipart(&key, &upload).await, "abort after refused complete", &key);
    assert_same(&ok(store.get(&key).await, "get", &key), &existing, "object after abort", &key);
    cleanup(store, &base).await;
}

// ---------------------------------------------------------------------------------------------------------
// helpers

/// `prefix` + `name` + a random suffix + `/`, unique per call.
fn unique(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}-{:016x}/", rand::random::<u64>())
}

fn random_bytes(len: usize) -> Bytes {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    Bytes::from(buf)
}

#[track_caller]
fn ok<T>(r: Result<T>, what: &str, key: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("conformance: {what} failed key={key}: {e}"),
    }
}

#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: Result<T>, what: &str, key: &str) -> Error {
    match r {
        Ok(v) => panic!("conformance: {what} must fail but succeeded key={key}: {v:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_same(got: &Bytes, expected: &Bytes, what: &str, key: &str) {
    if got != expected {
        let first_diff = got.iter().zip(expected.iter()).position(|(a, b)| a != b);
        panic!(
            "conformance: {what} returned different bytes key={key}: got {} bytes, expected {}; first difference at {:?}",
            got.len(),
            expected.len(),
            first_diff
        );
    }
}

/// Runs `f` for every item with at most [`CONCURRENCY`] calls in flight.
async fn for_each_concurrent<'a, T, F, Fut>(items: &'a [T], f: F)
where
    T: 'a,
    F: Fn(&'a T) -> Fut,
    Fut: Future<Output = ()> + 'a,
{
    let next = AtomicUsize::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            f(item).await;
        }
    };
    let mut workers: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> =
        (0..CONCURRENCY).map(|_| Box::pin(worker()) as Pin<Box<dyn Future<Output = ()> + '_>>).collect();
    std::future::poll_fn(|cx| {
        workers.retain_mut(|w| w.as_mut().poll(cx).is_pending());
        if workers.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Deletes everything under `base` and checks that nothing is left.
async fn cleanup<S: ObjectStore + ?Sized>(store: &S, base: &str) {
    let listed = ok(store.list(base).await, "list for cleanup", base);
    let keys: Vec<String> = listed.into_iter().map(|m| m.key).collect();
    for_each_concurrent(&keys, |key| async move { ok(store.delete(key).await, "delete for cleanup", key) }).await;
    let left = ok(store.list(base).await, "list after cleanup", base);
    assert!(left.is_empty(), "conformance: objects left under {base} after cleanup: {left:?}");
}
