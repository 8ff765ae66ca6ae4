//! Hostile and malformed input never panics (a panic would abort the worker's VM) and never
//! lets a request through without a session: random headers, cookies, callback queries and OP
//! answers, many thousand times.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::config::Settings;
use envoy_wam::gateway::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::{Action, CalloutResult};
use envoy_wam::login::Entropy;
use serde_json::json;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
    fn junk(&mut self) -> String {
        const PIECES: &[&str] = &[
            "PA.wam=",
            "PA.wam.txn.",
            ";",
            "=",
            ".",
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0",
            "eyJzdWIiOiJ4In0",
            "%",
            "%ZZ",
            "\u{0}",
            "é",
            "😀",
            "\\",
            "/",
            "//",
            "?",
            "&",
            "state=",
            "code=",
            "error=",
            "\"",
            " ",
            "AAAA",
            "-_",
            "null",
            "{",
            "}",
            "[",
            "]",
            "..",
            "\r\n",
            "\t",
        ];
        let n = (self.next() % 12) as usize;
        (0..n).map(|_| self.pick(PIECES)).collect()
    }
}

impl Entropy for Lcg {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for b in buf {
            *b = self.next() as u8;
        }
        true
    }
}

fn settings() -> Settings {
    let cfg = json!({
        "op": {
            "issuer": "https://op.example.com", "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks"
        },
        "client": {"client_id": "pa_wam", "client_secret": "s"},
        "session": {"signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([1u8; 32])}]},
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"}]
    });
    Settings::from_json(cfg.to_string().as_bytes()).unwrap()
}

#[test]
fn random_requests_and_op_answers_never_panic_or_pass() {
    let settings = settings();
    let mut vm = VmState::new(&settings);
    let mut rng = Lcg(7);
    let paths = [
        "/",
        "/pa/oidc/cb",
        "/pa/oidc/logout",
        "/pa/heartbeat.ping",
        "/pa/",
        "/app",
        "",
    ];
    let mut callouts = 0;
    for i in 0..20_000 {
        let mut path = format!("{}{}{}", rng.pick(&paths), rng.pick(&["", "?"]), rng.junk());
        let mut cookie = rng.junk();
        if i % 5 == 0 {
            // A genuine login start, so the callback reaches the OP callouts with random answers.
            let start = HeaderList::new([
                (":method", "GET"),
                (":path", "/x"),
                (":authority", "gw"),
                ("accept", "text/html"),
            ]);
            if let Action::Respond(r) =
                RequestFlow::new().on_request(&settings, &mut vm, &start, 1_800_000_000, &mut rng)
            {
                let loc = r.header_value("location").unwrap();
                let state = url::Url::parse(loc)
                    .unwrap()
                    .query_pairs()
                    .find(|(k, _)| k == "state")
                    .unwrap()
                    .1
                    .into_owned();
                let set = r.header_value("set-cookie").unwrap();
                cookie = format!("{}; {}", set.split(';').next().unwrap(), rng.junk());
                path = format!("/pa/oidc/cb?state={state}&code={}", rng.junk());
            }
        }
        let method = rng.pick(&["GET", "POST", "HEAD", "", "DELETE"]);
        let accept = rng.pick(&["text/html", "application/json", ""]);
        let headers = HeaderList::new([
            (":method", method),
            (":path", path.as_str()),
            (":authority", "gw"),
            ("cookie", cookie.as_str()),
            ("accept", accept),
        ]);
        let mut flow = RequestFlow::new();
        let mut entropy = Lcg(rng.next());
        let mut action = flow.on_request(&settings, &mut vm, &headers, 1_800_000_000, &mut entropy);
        // Feed random OP answers to any callout.
        for _ in 0..3 {
            let Action::Callout(_) = action else { break };
            callouts += 1;
            let body = rng.junk().into_bytes();
            let result = match rng.next() % 4 {
                0 => CalloutResult::TimedOut,
                1 => CalloutResult::Failed,
                2 => CalloutResult::Response {
                    status: 200,
                    body: format!("{{\"id_token\":\"{}\"}}", rng.junk()).into_bytes(),
                },
                _ => CalloutResult::Response {
                    status: (rng.next() % 600) as u16,
                    body,
                },
            };
            action = flow.on_callout(
                &settings,
                &mut vm,
                &headers,
                result,
                1_800_000_000,
                &mut entropy,
            );
        }
        if let Action::Forward(_) = action {
            panic!("forwarded without a session: path={path:?} cookie={cookie:?}");
        }
    }
    assert!(
        callouts > 3000,
        "the OP answers were exercised ({callouts} callouts)"
    );
}
