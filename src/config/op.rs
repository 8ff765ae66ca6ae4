//! An OP's section (`op`: issuer, cluster, endpoints or discovery) and a client's (`client`),
//! read for the default web session, each named web session and each token provider.

use super::raw::{RawClient, RawOp};
use super::{parse_http_url, ClientSettings, ConfigError, ConfiguredEndpoints, Endpoint};
use super::{OpSettings, Validation};

/// What an OP is used for, which decides the endpoints it must have without discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpUse {
    /// Sign-in (a web session): authorization, token and JWKS.
    Login,
    /// Bearer tokens of a token provider, checked as it says.
    Tokens(Validation),
}

/// Reads the `op` section at `at` (`op`, `web_sessions[1].op`, `token_providers[0].op`).
pub(super) fn read_op(at: &str, op: RawOp, used: OpUse) -> Result<OpSettings, ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    if op.issuer.is_empty() {
        return Err(ConfigError::new(field("issuer"), "must not be empty"));
    }
    parse_http_url(&field("issuer"), &op.issuer)?;
    if op.cluster.is_empty() {
        return Err(ConfigError::new(
            field("cluster"),
            "must name an Envoy cluster",
        ));
    }
    if op.timeout_ms == 0 || op.timeout_ms > 60_000 {
        return Err(ConfigError::new(
            field("timeout_ms"),
            "must be between 1 and 60000",
        ));
    }
    let url = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|u| parse_http_url(&field(name), u))
            .transpose()
    };
    let endpoint = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|u| Endpoint::parse(&field(name), u))
            .transpose()
    };
    let endpoints = ConfiguredEndpoints {
        authorization: url("authorization_endpoint", &op.authorization_endpoint)?,
        token: endpoint("token_endpoint", &op.token_endpoint)?,
        jwks: endpoint("jwks_uri", &op.jwks_uri)?,
        end_session: url("end_session_endpoint", &op.end_session_endpoint)?,
        introspection: endpoint("introspection_endpoint", &op.introspection_endpoint)?,
        userinfo: endpoint("userinfo_endpoint", &op.userinfo_endpoint)?,
        revocation: endpoint("revocation_endpoint", &op.revocation_endpoint)?,
    };
    let discovery = if op.discovery {
        let url = format!(
            "{}/.well-known/openid-configuration",
            op.issuer.trim_end_matches('/')
        );
        Some(Endpoint::parse(&field("issuer"), &url)?)
    } else {
        if let Some(missing) = endpoints.missing_for(used) {
            return Err(ConfigError::new(
                field(missing),
                format!("is required unless {at}.discovery is true"),
            ));
        }
        None
    };
    Ok(OpSettings {
        endpoints,
        discovery,
        used,
        issuer: op.issuer,
        cluster: op.cluster,
        timeout_ms: op.timeout_ms,
        jwks_max_age_s: op.jwks_max_age_s,
        jwks_min_refetch_interval_s: op.jwks_min_refetch_interval_s,
    })
}

/// Reads the `client` section at `at` (`client`, `web_sessions[1].client`): `callback_path`
/// is where this web session's OP sends the browser back.
pub(super) fn read_client(
    at: &str,
    client: RawClient,
    callback_path: &str,
) -> Result<ClientSettings, ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    if client.client_id.is_empty() {
        return Err(ConfigError::new(field("client_id"), "must not be empty"));
    }
    if client.client_secret.is_empty() {
        return Err(ConfigError::new(
            field("client_secret"),
            "must not be empty",
        ));
    }
    if !client.scopes.iter().any(|s| s == "openid") {
        return Err(ConfigError::new(
            field("scopes"),
            "must include `openid` (this is an OpenID Connect login)",
        ));
    }
    if let Some(bad) = client
        .scopes
        .iter()
        .find(|s| s.is_empty() || s.contains([' ', '"', '\\']))
    {
        return Err(ConfigError::new(
            field("scopes"),
            format!("`{bad}` is not a valid scope token"),
        ));
    }
    if let Some(uri) = &client.redirect_uri {
        let url = parse_http_url(&field("redirect_uri"), uri)?;
        if url.path() != callback_path {
            return Err(ConfigError::new(
                field("redirect_uri"),
                format!("must end in the callback path {callback_path}"),
            ));
        }
    }
    Ok(ClientSettings {
        scope: client.scopes.join(" "),
        client_id: client.client_id,
        client_secret: client.client_secret,
        auth_method: client.auth_method,
        redirect_uri: client.redirect_uri,
    })
}

impl ConfiguredEndpoints {
    /// The first endpoint `used` needs that is not configured (its field name).
    pub(super) fn missing_for(&self, used: OpUse) -> Option<&'static str> {
        let needed: &[(&str, bool)] = match used {
            OpUse::Login => &[
                ("authorization_endpoint", self.authorization.is_none()),
                ("token_endpoint", self.token.is_none()),
                ("jwks_uri", self.jwks.is_none()),
            ],
            OpUse::Tokens(Validation::Jwt) => &[("jwks_uri", self.jwks.is_none())],
            OpUse::Tokens(Validation::Introspection) => {
                &[("introspection_endpoint", self.introspection.is_none())]
            }
        };
        needed.iter().find(|(_, missing)| *missing).map(|(f, _)| *f)
    }
}
