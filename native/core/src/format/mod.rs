//! Object formats: keys ([`keys`]), segment manifests ([`manifest`]) and CRC-32C helpers.
//!
//! The formats are specified in `docs/formats.md`; this module is their only implementation. Every change
//! to a stored layout bumps [`FORMAT_VERSION`] and keeps readers for older versions.

pub mod batch;
pub mod keys;
pub mod manifest;

/// Version of the stored layout written by this build (keys carry `v1/`, manifests `"version": 1`).
pub const FORMAT_VERSION: u32 = 1;

/// CRC-32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// CRC-32C of every `chunk`-sized piece of `data` (the last piece may be shorter).
pub fn chunk_crcs(data: &[u8], chunk: usize) -> Vec<u32> {
    data.chunks(chunk.max(1)).map(crc32c).collect()
}
