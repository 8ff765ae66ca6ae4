//! The hosts. The proxy-wasm host (wasm32) maps Envoy's callbacks onto the sans-IO core and carries out the
//! actions it returns. Nothing here decides anything about access.
//!
//! Host calls that can fail at run time go through `hostcalls` (which returns a `Result`)
//! instead of the SDK's trait helpers (which unwrap), and header values are read as bytes:
//! the SDK's string variants panic on non-UTF-8 values, and a panic would abort the VM.
//!
//! - `wasm`: the entry point and the root and HTTP contexts, whose callbacks hand the request
//!   to the flow;
//! - `actions`: carrying out what the flow returns: the callout registry, parking and waking
//!   requests, deferred sends, local answers and header changes;
//! - `request`: the request's headers as Envoy has them;
//! - `runtime`: the host's clock, log and randomness;
//! - `shared`: Envoy's shared data as the revocation list's store;
//! - `stats`: the filter's metrics as Envoy stats, fed from the root tick;
//! - `access_log`: the flow's access-log fields into Envoy's filter state;
//! - `reload`: whether the last configuration was taken, in Envoy's stats;
//! - `carry`: carrying out the flow's actions, the steps both hosts take alike, each host
//!   mapping them onto its ABI;
//! - `common`: what both hosts do alike, with no host calls;
//! - `native`: the Envoy dynamic-module host (its own ABI binding and mapping), for every
//!   target but wasm32.

mod carry;
pub(crate) mod common;
#[cfg(not(target_arch = "wasm32"))]
mod native;

#[cfg(target_arch = "wasm32")]
mod access_log;
#[cfg(target_arch = "wasm32")]
mod actions;
#[cfg(target_arch = "wasm32")]
mod reload;
#[cfg(target_arch = "wasm32")]
mod request;
#[cfg(target_arch = "wasm32")]
mod runtime;
#[cfg(target_arch = "wasm32")]
mod shared;
#[cfg(target_arch = "wasm32")]
mod stats;
#[cfg(target_arch = "wasm32")]
mod wasm;
