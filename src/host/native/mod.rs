//! The Envoy dynamic-module host: the same sans-IO core as the proxy-wasm host, loaded by
//! Envoy as a native shared library (`target/libenvoy_wam.so`, `./native-build.sh`).
//!
//! - `abi`: the project's own `extern "C"` binding to Envoy's dynamic-module ABI (v0.2.0,
//!   Envoy 1.40), the exported hooks (each under `catch_unwind`) and safe wrappers; the only
//!   `unsafe` of this build;
//! - `filter`: the mapping of Envoy's hooks onto the flow, and carrying out its actions;
//! - `stats`: the filter's metrics and reload stats, defined per configuration and handed to
//!   Envoy as requests end;
//! - `worker`: what one worker thread keeps per configuration (the VM state, parked
//!   requests, the tick), the ticker thread, and the process-wide store the revocation list
//!   is shared through.
//!
//! - `shared_caches`: the process-wide tier of the caches (sessions, bearer-token checks,
//!   JWKS, mediated tokens) and the rate-limit buckets, one per configuration.
//!
//! As in the wasm build, each worker has its own caches (a thread-local VM state per
//! configuration), asked first and without a lock; unlike there, a miss asks the process's
//! tier before verifying or calling out, so a token or key is learned once per process, and a
//! rate limit is exact per Envoy. The revocation list and validation slots are shared too.

mod abi;
mod filter;
mod shared_caches;
mod stats;
mod worker;
