//! Prints a valid session cookie value for a filter configuration, so benchmarks and load
//! tests can send authenticated requests without driving a browser login each time.
//!
//! usage: mint_session <config.json> <sub> [claim=value ...]

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
    let mut args = std::env::args().skip(1);
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
    let session = Session {
        sid: "bench".into(),
        sub,
        auth_time: now,
        expires_at: now + settings.default_web().session.max_lifetime_s,
        last_activity: now,
        created_at: now,
        claims,
        op: OpState {
            validated_at: now,
            ..OpState::default()
        },
    };
    println!(
        "{}",
        session
            .encode(&settings.default_web().session.keys, &mut OsEntropy)
            .ok_or("could not seal")?
    );
    Ok(())
}
