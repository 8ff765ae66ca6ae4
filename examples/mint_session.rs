//! Prints a valid session cookie value for a filter configuration, so benchmarks and load
//! tests can send authenticated requests without driving a browser login each time.
//!
//! usage: mint_session [--web-session NAME] [--count N] <config.json> <sub> [claim=value ...]
//!
//! `--web-session NAME`: a cookie of that web session of `web_sessions` (by default the default
//! one's). `--count N`: N cookies, one a line, for the subjects `<sub>-0` .. `<sub>-<N-1>` (each
//! its own session id), for load tests with many distinct users.

use std::time::{SystemTime, UNIX_EPOCH};

use envoy_wam::config::{Settings, WebSession};
use envoy_wam::login::Entropy;
use envoy_wam::session::{OpState, Session};

struct OsEntropy;
impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}

const USAGE: &str =
    "usage: mint_session [--web-session NAME] [--count N] <config.json> <sub> [claim=value ...]";

/// Takes `--name VALUE` out of `args`.
fn option(args: &mut Vec<String>, name: &str) -> Result<Option<String>, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let value = args
                .get(i + 1)
                .cloned()
                .ok_or(format!("{name} needs a value"))?;
            args.drain(i..i + 2);
            Ok(Some(value))
        }
        None => Ok(None),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let web_session = option(&mut args, "--web-session")?;
    let count = option(&mut args, "--count")?
        .map(|n| n.parse::<usize>())
        .transpose()?;
    let mut args = args.into_iter();
    let path = args.next().ok_or(USAGE)?;
    let sub = args.next().ok_or("missing <sub>")?;
    let settings = Settings::from_json(&std::fs::read(path)?)?;
    let web = match &web_session {
        None => settings.default_web(),
        Some(name) => settings
            .web_sessions
            .iter()
            .find(|w| &w.name == name)
            .ok_or_else(|| format!("no web session is named `{name}`"))?,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::Map::new();
    for pair in args {
        let (k, v) = pair.split_once('=').ok_or("claims are name=value")?;
        claims.insert(k.to_string(), v.into());
    }
    let subjects: Vec<(String, String)> = match count {
        None => vec![("bench".into(), sub)],
        Some(n) => (0..n)
            .map(|i| (format!("sid-{i}"), format!("{sub}-{i}")))
            .collect(),
    };
    let mut out = String::new();
    for (sid, sub) in subjects {
        out.push_str(&mint(web, sid, sub, claims.clone(), now)?);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn mint(
    web: &WebSession,
    sid: String,
    sub: String,
    claims: serde_json::Map<String, serde_json::Value>,
    now: u64,
) -> Result<String, Box<dyn std::error::Error>> {
    let session = Session {
        sid,
        sub,
        auth_time: now,
        expires_at: now + web.session.max_lifetime_s,
        last_activity: now,
        created_at: now,
        claims,
        op: OpState {
            validated_at: now,
            ..OpState::default()
        },
    };
    Ok(session
        .encode(&web.session.keys, &mut OsEntropy)
        .ok_or("could not seal")?)
}
