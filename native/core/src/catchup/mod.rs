//! Follower catch-up through object storage: replication through the fast tier.
//!
//! A follower broker's replica fetcher connects to each leader's advertised inter-broker endpoint; the
//! broker's JVM resolves that name to a listener of this module inside the follower itself (the zone-local
//! endpoint). There the follower's replica fetches are answered with record bytes from the leader's
//! fast-tier stream, read from object storage in the follower's own zone, while only offsets, high
//! watermarks, errors and epochs travel to and from the leader. Everything else on the connection is
//! relayed to the leader unchanged. See `docs/replication.md`.
//!
//! * [`wire`] — Kafka framing and the header fields the proxy reads;
//! * [`bounded`] — checks that decoding a message allocates no more than it holds;
//! * [`caller`] — who may use the proxy (only this broker's own connections);
//! * [`upstream`] — a multiplexed connection to a leader;
//! * [`follow`] — following a leader's fast-tier stream, verified, with a bounded cache;
//! * [`fetch`] — answering one follower connection's replica fetches (modes, offset reports, fallback);
//! * [`notify`] — the leader's new-object notifications to its followers;
//! * [`proxy`] — the listeners and the per-connection relay.

pub mod bounded;
pub mod caller;
pub mod fetch;
pub mod follow;
pub mod notify;
pub mod proxy;
pub mod upstream;
pub mod wire;

pub use proxy::FastReplication;

#[cfg(test)]
mod tests;
