//! Whose identities a site authenticator mediates. A site's token is made from one web
//! session's users (or from the named token providers' tokens): two OPs may both have an
//! `alice`, and a site's STS, or its cache here, could not tell them apart.

use super::{ConfigError, TokenProvider, WebSession};
use crate::mediation::{SiteAuthenticator, Source, SubjectFrom};
use crate::policy::{AppType, Application};

/// Resolves each site's `subject` and checks that the applications using a site agree with it.
pub(super) fn resolve(
    sites: &mut [SiteAuthenticator],
    apps: &[Application],
    webs: &[WebSession],
    providers: &[TokenProvider],
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
        // The web session of the first application that mediates sessions through this site.
        let mut sessions_of: Option<usize> = None;
        for (j, app) in apps.iter().enumerate() {
            if app.site_authenticator.as_deref() != Some(site.name.as_str()) {
                continue;
            }
            check_app(j, app, site, webs)?;
            if app.app_type == AppType::Api || site.source.is_some() {
                continue;
            }
            match sessions_of {
                Some(w) if w != app.web_session => {
                    return Err(ConfigError::new(
                        format!("policy.applications[{j}].site_authenticator"),
                        format!(
                            "site `{}` already serves the users of web session `{}`: its token \
                             service could not tell two OPs' users apart; give this web \
                             session its own site authenticator",
                            site.name,
                            webs.get(w).map_or("", |w| w.name.as_str()),
                        ),
                    ))
                }
                _ => sessions_of = Some(app.web_session),
            }
        }
    }
    Ok(())
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
