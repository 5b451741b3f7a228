//! The object-store layer: one narrow trait, three implementations.
//!
//! * [`memory::MemoryStore`] — in-process, for tests and the `memory` backend;
//! * [`faulty::FaultyStore`] — wraps any store and injects failures, latency and corruption;
//! * [`s3::S3Store`] — S3 and S3-compatible servers through aws-sdk-s3.
//!
//! All three pass the same conformance suite ([`conformance`]). The trait is deliberately small: whole-object
//! put (optionally conditional create), ranged get, head, delete, list and multipart upload. Anything
//! smarter (chunking, CRC-32C verification, caching) lives above it.

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

pub mod conformance;
pub mod faulty;
pub mod memory;
pub mod s3;

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Options for [`ObjectStore::put`] and [`ObjectStore::complete_multipart`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Create only if no object exists at the key (`If-None-Match: *`). A conflict is
    /// [`crate::error::Error::AlreadyExists`].
    pub if_none_match: bool,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based part number.
    pub part_number: i32,
    /// The ETag the store returned for this part.
    pub etag: String,
}

/// The narrow object-store trait every backend implements.
///
/// Contract (checked by the conformance suite):
/// * `get_range` with `range.end` beyond the object end returns the bytes up to the end; a range that
///   starts at or past the end of a non-empty object is an error of class fatal (`Store`); a missing key is
///   `NotFound`.
/// * `delete` of a missing key succeeds (idempotent).
/// * `list` returns every object whose key starts with `prefix`, in any order (callers sort if they need).
/// * A multipart upload's object is invisible until `complete_multipart`; `abort_multipart` removes its
///   parts and is idempotent.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug + 'static {
    /// Stores `body` at `key`, replacing any object there unless `opts.if_none_match` is set.
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<()>;

    /// Reads the bytes `range` of the object at `key`.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Reads the whole object at `key`.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Size of the object at `key`.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Removes the object at `key`; succeeds if it does not exist.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Starts a multipart upload to `key`; returns its upload id.
    async fn create_multipart(&self, key: &str) -> Result<String>;

    /// Uploads part `part_number` (1-based; every part but the last ≥ 5 MiB on S3).
    async fn put_part(&self, key: &str, upload_id: &str, part_number: i32, body: Bytes) -> Result<CompletedPart>;

    /// Completes the upload with `parts` in ascending part-number order.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        opts: PutOptions,
    ) -> Result<()>;

    /// Abandons the upload and frees its parts; succeeds if it is already gone.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;
}
