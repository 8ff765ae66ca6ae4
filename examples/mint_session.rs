//! Prints a valid session cookie value for a filter configuration, so benchmarks and load
//! tests can send authenticated requests without driving a browser login each time.
//!
//! usage: mint_session <config.json> <sub> [claim=value ...] [--count N]
//!
//! With `--count N`, prints N cookies, one a line, for the subjects `<sub>-0` .. `<sub>-<N-1>`
//! (each its own session id), for load tests with many distinct users.

use std::time::{SystemTime, UNIX_EPOCH};

use envoy_wam::config::Settings;
use envoy_wam::login::Entropy;
use envoy_wam::session::{OpState, Session};

struct OsEntropy;
impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let count = match args.iter().position(|a| a == "--count") {
        Some(i) => {
            let n = args
                .get(i + 1)
                .ok_or("--count needs a number")?
                .parse::<usize>()?;
            args.drain(i..i + 2);
            Some(n)
        }
        None => None,
    };
    let mut args = args.into_iter();
    let path = args
        .next()
        .ok_or("usage: mint_session <config.json> <sub> [claim=value ...]")?;
    let sub = args.next().ok_or("missing <sub>")?;
    let settings = Settings::from_json(&std::fs::read(path)?)?;
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
        let line = mint(&settings, sid, sub, claims.clone(), now)?;
        out.push_str(&line);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn mint(
    settings: &Settings,
    sid: String,
    sub: String,
    claims: serde_json::Map<String, serde_json::Value>,
    now: u64,
) -> Result<String, Box<dyn std::error::Error>> {
    let session = Session {
        sid,
        sub,
        auth_time: now,
        expires_at: now + settings.session.max_lifetime_s,
        last_activity: now,
        created_at: now,
        claims,
        op: OpState {
            validated_at: now,
            ..OpState::default()
        },
    };
    Ok(session
        .encode(&settings.session.keys, &mut OsEntropy)
        .ok_or("could not seal")?)
}
