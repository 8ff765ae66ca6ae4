//! envoy-wam: web access management for Envoy, as a proxy-wasm filter.
//!
//! The modules below `host` are plain Rust with no I/O: they take the time and randomness
//! as inputs and say what to do as data ([`http::Action`]), so they compile and are tested
//! natively. `host` maps the host's callbacks onto them: proxy-wasm on wasm32 (the `.wasm`),
//! Envoy's dynamic-module ABI elsewhere (the `.so`, `./native-build.sh`).

pub mod access;
pub mod authtoken;
pub mod bearer;
pub mod cache;
pub mod canonical;
#[cfg(not(target_arch = "wasm32"))]
pub mod checker;
pub mod config;
pub mod cookie;
pub mod discovery;
pub mod flow;
pub mod http;
pub mod id_token;
pub mod identity;
pub mod jwks;
mod jws;
pub mod login;
pub mod logout_token;
pub mod mediation;
pub mod metrics;
pub mod oidc;
pub mod op_session;
pub mod pages;
pub mod policy;
pub mod preserve;
pub mod request;
pub mod revocation;
pub mod session;
pub mod shared_tier;

mod host;
