//! The proxy-wasm host: maps Envoy's callbacks onto the sans-IO core and carries out the
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
//! - `stats`: the filter's metrics as Envoy stats, fed from the root tick.
//! - `access_log`: the flow's access-log fields into Envoy's filter state;
//! - `reload`: whether the last configuration was taken, in Envoy's stats.

mod access_log;
mod actions;
mod reload;
mod request;
mod runtime;
mod shared;
mod stats;
mod wasm;
