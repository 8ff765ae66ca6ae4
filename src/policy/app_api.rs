//! An application's `api` section: how its bearer tokens are checked (by the OP of its web
//! session, or by the named token providers, which the configuration resolves).

use super::raw::RawApplication;
use super::{AppApi, AppType};
use crate::config::ConfigError;

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

/// `policy.applications[i].api` (`field` is the application's path), checked.
pub(super) fn compile(field: &str, raw: &RawApplication) -> Result<Option<AppApi>, ConfigError> {
    Ok(match (&raw.api, raw.app_type) {
        (None, AppType::Web) => None,
        (None, _) => return Err(err(
            format!("{field}.api"),
            "required for applications of type `api` or `both` (validation: jwt or introspection)",
        )),
        (Some(api), _) if !api.token_providers.is_empty() => {
            let named = |what: &str| {
                err(
                    format!("{field}.api.{what}"),
                    "is set by each of `token_providers`, not here",
                )
            };
            if api.validation.is_some() {
                return Err(named("validation"));
            }
            if !api.audiences.is_empty() {
                return Err(named("audiences"));
            }
            if let Some(i) = api.token_providers.iter().position(|a| a.is_empty()) {
                return Err(err(
                    format!("{field}.api.token_providers[{i}]"),
                    "must name a token provider",
                ));
            }
            Some(AppApi {
                validation: super::Validation::Jwt,
                audiences: Vec::new(),
                forward_token: api.forward_token,
                token_providers: api.token_providers.clone(),
                providers: Vec::new(),
            })
        }
        (Some(api), _) => {
            let validation = api.validation.unwrap_or(super::Validation::Jwt);
            if validation == super::Validation::Jwt && api.audiences.is_empty() {
                return Err(err(
                    format!("{field}.api.audiences"),
                    "JWT validation needs at least one accepted audience",
                ));
            }
            if let Some(i) = api.audiences.iter().position(|a| a.is_empty()) {
                return Err(err(
                    format!("{field}.api.audiences[{i}]"),
                    "must not be empty",
                ));
            }
            Some(AppApi {
                validation,
                audiences: api.audiences.clone(),
                forward_token: api.forward_token,
                token_providers: Vec::new(),
                providers: Vec::new(),
            })
        }
    })
}
