//! Token providers: the issuers whose bearer tokens API applications accept, each checked with
//! its own JWKS or introspection endpoint and audiences. Named ones come from
//! `token_providers`; an API application that names none accepts its web session's OP, as
//! its own `api` section says (an unnamed provider is made for that, shared by applications
//! that check alike).

use super::op::{read_op, OpUse};
use super::raw::RawTokenProvider;
use super::{ConfigError, OpSettings, Validation};
use crate::policy::Application;

/// One issuer of bearer tokens and how its tokens are checked.
#[derive(Clone)]
pub struct TokenProvider {
    /// The configured name; `None` for a provider made from an application's `api` section.
    pub name: Option<String>,
    /// Index of its OP in `Settings::ops`.
    pub op: usize,
    pub validation: Validation,
    /// The token's `aud` must contain one of these (JWT validation).
    pub audiences: Vec<String>,
    /// The gateway's credentials at the introspection endpoint: (client id, secret).
    pub client: Option<(String, String)>,
}

impl std::fmt::Debug for TokenProvider {
    /// Never the client secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("name", &self.name)
            .field("op", &self.op)
            .field("validation", &self.validation)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// Reads `token_providers[i]`; its OP gets index `op`.
pub(super) fn read(
    i: usize,
    raw: RawTokenProvider,
    op: usize,
) -> Result<(TokenProvider, OpSettings), ConfigError> {
    let at = format!("token_providers[{i}]");
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= 64
        && raw
            .name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    if !name_ok {
        return Err(ConfigError::new(
            format!("{at}.name"),
            "must be 1 to 64 of letters, digits, - _ and .",
        ));
    }
    let op_settings = read_op(&format!("{at}.op"), raw.op, OpUse::Tokens(raw.validation))?;
    if raw.validation == Validation::Jwt && raw.audiences.is_empty() {
        return Err(ConfigError::new(
            format!("{at}.audiences"),
            "JWT validation needs at least one accepted audience",
        ));
    }
    if raw.validation == Validation::Introspection && !raw.audiences.is_empty() {
        // The introspection answer's `aud` is not checked: an audience written here would
        // only look enforced.
        return Err(ConfigError::new(
            format!("{at}.audiences"),
            "applies to JWT validation only; the introspection endpoint decides which tokens \
             are active for this gateway",
        ));
    }
    if let Some(j) = raw.audiences.iter().position(|a| a.is_empty()) {
        return Err(ConfigError::new(
            format!("{at}.audiences[{j}]"),
            "must not be empty",
        ));
    }
    let client = match (raw.validation, raw.client) {
        (Validation::Introspection, None) => {
            return Err(ConfigError::new(
                format!("{at}.client"),
                "introspection needs the gateway's client_id and client_secret at this OP",
            ))
        }
        (_, Some(c)) if c.client_id.is_empty() || c.client_secret.is_empty() => {
            return Err(ConfigError::new(
                format!("{at}.client"),
                "client_id and client_secret must not be empty",
            ))
        }
        (_, c) => c.map(|c| (c.client_id, c.client_secret)),
    };
    let provider = TokenProvider {
        name: Some(raw.name),
        op,
        validation: raw.validation,
        audiences: raw.audiences,
        client,
    };
    Ok((provider, op_settings))
}

/// The providers of application `app` (`policy.applications[i]`): its named ones, or one made
/// from its `api` section and its web session (`web`, with that session's OP and client).
pub(super) fn resolve(
    i: usize,
    app: &Application,
    providers: &mut Vec<TokenProvider>,
    session: &super::WebSession,
) -> Result<Vec<usize>, ConfigError> {
    let Some(api) = app.api.as_ref() else {
        return Ok(Vec::new());
    };
    if api.token_providers.is_empty() {
        let made = TokenProvider {
            name: None,
            op: session.op,
            validation: api.validation,
            audiences: api.audiences.clone(),
            client: Some((
                session.client.client_id.clone(),
                session.client.client_secret.clone(),
            )),
        };
        let same = |p: &TokenProvider| {
            p.name.is_none()
                && p.op == made.op
                && p.validation == made.validation
                && p.audiences == made.audiences
                && p.client == made.client
        };
        let at = match providers.iter().position(same) {
            Some(at) => at,
            None => {
                providers.push(made);
                providers.len() - 1
            }
        };
        return Ok(vec![at]);
    }
    let mut out = Vec::new();
    for (j, name) in api.token_providers.iter().enumerate() {
        let found = providers
            .iter()
            .position(|p| p.name.as_deref() == Some(name.as_str()));
        let Some(at) = found else {
            return Err(ConfigError::new(
                format!("policy.applications[{i}].api.token_providers[{j}]"),
                format!("no token provider is named `{name}`"),
            ));
        };
        if out.contains(&at) {
            return Err(ConfigError::new(
                format!("policy.applications[{i}].api.token_providers[{j}]"),
                "is listed twice",
            ));
        }
        out.push(at);
    }
    Ok(out)
}

/// Two providers of one application with the same issuer: a token could not be matched to one
/// of them by its `iss`.
pub(super) fn check_issuers(
    i: usize,
    chosen: &[usize],
    providers: &[TokenProvider],
    ops: &[OpSettings],
) -> Result<(), ConfigError> {
    let issuer = |p: usize| {
        providers
            .get(p)
            .and_then(|p| ops.get(p.op))
            .map(|o| o.issuer.as_str())
    };
    for (j, &p) in chosen.iter().enumerate() {
        if chosen.iter().take(j).any(|&q| issuer(q) == issuer(p)) {
            return Err(ConfigError::new(
                format!("policy.applications[{i}].api.token_providers[{j}]"),
                "has the issuer of another provider of this application: tokens are matched \
                 to providers by `iss`",
            ));
        }
    }
    Ok(())
}
