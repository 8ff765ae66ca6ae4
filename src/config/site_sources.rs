//! Whose identities a site authenticator mediates. A site's token is made from one OP's users
//! (a web session's, or a token provider's): two OPs may both have an `alice`, and a site, its
//! STS or its cache here could not tell them apart from a `sub`.

use super::{ConfigError, OpSettings, TokenProvider, WebSession};
use crate::mediation::{SiteAuthenticator, Source, SubjectFrom};
use crate::policy::{AppType, Application};

/// Resolves each site's `subject` and checks that the applications using a site agree with it.
pub(super) fn resolve(
    sites: &mut [SiteAuthenticator],
    apps: &[Application],
    webs: &[WebSession],
    providers: &[TokenProvider],
    ops: &[OpSettings],
) -> Result<(), ConfigError> {
    for (i, site) in sites.iter_mut().enumerate() {
        site.source = match &site.subject {
            None => None,
            Some(SubjectFrom::WebSession(name)) => {
                let found = webs.iter().position(|w| &w.name == name);
                Some(Source::WebSession(found.ok_or_else(|| {
                    ConfigError::new(
                        format!("site_authenticators[{i}].subject.web_session"),
                        format!("no web session is named `{name}`"),
                    )
                })?))
            }
            Some(SubjectFrom::TokenProvider(name)) => {
                let found = providers
                    .iter()
                    .position(|p| p.name.as_deref() == Some(name.as_str()));
                Some(Source::TokenProvider(found.ok_or_else(|| {
                    ConfigError::new(
                        format!("site_authenticators[{i}].subject.token_provider"),
                        format!("no token provider is named `{name}`"),
                    )
                })?))
            }
        };
    }
    for site in sites.iter() {
        // The OP whose users the first application using this site brings.
        let mut issuer_of: Option<&str> = None;
        for (j, app) in apps.iter().enumerate() {
            if app.site_authenticator.as_deref() != Some(site.name.as_str()) {
                continue;
            }
            check_app(j, app, site, webs)?;
            if site.source.is_some() {
                continue;
            }
            for issuer in issuers(app, site, webs, providers, ops) {
                match issuer_of {
                    Some(first) if first != issuer => {
                        return Err(ConfigError::new(
                            format!("policy.applications[{j}].site_authenticator"),
                            format!(
                                "site `{}` already serves the users of {first}, and this \
                                 application brings those of {issuer}: the site could not tell \
                                 two OPs' users of the same `sub` apart; give each OP its own \
                                 site authenticator, or name one in `subject`",
                                site.name,
                            ),
                        ))
                    }
                    _ => issuer_of = Some(issuer),
                }
            }
        }
    }
    Ok(())
}

/// The OPs whose users application `app` brings to `site`: its web session's (sessions), and
/// its token providers' (bearer tokens), except where the site sends the client's own token
/// to its STS, whose `iss` then says which OP it is.
fn issuers<'a>(
    app: &Application,
    site: &SiteAuthenticator,
    webs: &[WebSession],
    providers: &[TokenProvider],
    ops: &'a [OpSettings],
) -> Vec<&'a str> {
    let issuer = |op: usize| ops.get(op).map(|o| o.issuer.as_str());
    let mut out = Vec::new();
    if app.app_type != AppType::Api {
        out.extend(webs.get(app.web_session).and_then(|w| issuer(w.op)));
    }
    let own_token_goes = site.token_exchange().is_some();
    if app.app_type != AppType::Web && !own_token_goes {
        let chosen = app
            .api
            .as_ref()
            .map(|a| a.providers.as_slice())
            .unwrap_or_default();
        out.extend(
            chosen
                .iter()
                .filter_map(|&p| providers.get(p).and_then(|p| issuer(p.op))),
        );
    }
    out
}

/// Application `j` (using `site`) can give the identity the site's `subject` names.
fn check_app(
    j: usize,
    app: &Application,
    site: &SiteAuthenticator,
    webs: &[WebSession],
) -> Result<(), ConfigError> {
    let field = || format!("policy.applications[{j}].site_authenticator");
    match site.source {
        None => Ok(()),
        Some(Source::WebSession(w)) if app.app_type == AppType::Api => Err(ConfigError::new(
            field(),
            format!(
                "site `{}` mediates users of web session `{}`; an API application has none",
                site.name,
                webs.get(w).map_or("", |w| w.name.as_str()),
            ),
        )),
        Some(Source::WebSession(w)) if app.web_session != w => Err(ConfigError::new(
            field(),
            format!(
                "site `{}` mediates users of web session `{}`, not of this application's",
                site.name,
                webs.get(w).map_or("", |w| w.name.as_str()),
            ),
        )),
        Some(Source::TokenProvider(_)) if app.app_type == AppType::Web => Err(ConfigError::new(
            field(),
            format!(
                "site `{}` mediates bearer tokens; a web application has none",
                site.name
            ),
        )),
        Some(Source::TokenProvider(p)) => {
            let accepts = app.api.as_ref().is_some_and(|a| a.providers.contains(&p));
            if accepts {
                Ok(())
            } else {
                Err(ConfigError::new(
                    field(),
                    format!(
                        "site `{}` mediates tokens of a provider this application does not accept",
                        site.name
                    ),
                ))
            }
        }
        Some(Source::WebSession(_)) => Ok(()),
    }
}
