//! Hostile and malformed input never panics (a panic would abort the worker's VM) and never
//! lets a request through without a session: random headers, cookies, callback queries and OP
//! answers, many thousand times.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, HeaderSource, RequestFlow, VmState};
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
        "client": {"client_id": "pa_wam", "client_secret": "s",
                   "redirect_uri": "https://gw/pa/oidc/cb"},
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

/// A gateway with every kind of application: API (JWT and introspection), web with rules and
/// an unprotected resource, and both mediation kinds.
fn policy_settings() -> Settings {
    let cfg = json!({
        "op": {
            "issuer": "https://op.example.com", "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks",
            "introspection_endpoint": "https://op.example.com/introspect"
        },
        "client": {"client_id": "pa_wam", "client_secret": "s"},
        "session": {"signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([1u8; 32])}]},
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"}],
        "api": {"cache_max_ttl_s": 2, "negative_ttl_s": 1},
        "authtoken": {"issuer": "envoy-wam", "keys": [{"kid": "gw", "alg": "ES256", "private_key_pem": EC_KEY}]},
        "site_authenticators": [
            {"name": "sts", "type": "token_exchange", "audience": "https://site",
             "sts": {"cluster": "sts", "token_endpoint": "https://sts.example.com/token",
                     "client_id": "pa_sts", "client_secret": "x"},
             "inject": {"header": "authorization"}, "cache": {"max_lifetime_s": 3}},
            {"name": "jwt", "type": "jwt", "audience": "https://site", "claims": ["sub"],
             "inject": {"cookie": "site"}}
        ],
        "policy": {
            "unprotected_paths": ["/static/*"],
            "applications": [
                {"name": "api", "hosts": ["api"], "type": "api", "site_authenticator": "sts",
                 "api": {"validation": "jwt", "audiences": ["https://api"]},
                 "rules": [{"type": "scope", "any": ["read"]}],
                 "resources": [{"name": "root", "paths": ["/*"]}]},
                {"name": "intro", "hosts": ["intro"], "type": "both", "site_authenticator": "jwt",
                 "api": {"validation": "introspection"},
                 "resources": [{"name": "limited", "paths": ["/l/*"],
                    "rules": [{"type": "rate_limit", "requests": 2, "interval_s": 60, "per": "client_address"}]},
                    {"name": "root", "paths": ["/*"]}]},
                {"name": "web", "hosts": ["gw"], "type": "web", "site_authenticator": "sts",
                 "resources": [
                    {"name": "open", "paths": ["/open/*"], "unprotected": true},
                    {"name": "admin", "paths": ["~^/admin/[a-z]+$"], "audit": true,
                     "rules": [{"type": "attribute", "claim": "groups", "matches": "^adm.*"}]},
                    {"name": "root", "paths": ["/*"]}],
                 "ordering": "manual"}
            ]
        }
    });
    Settings::from_json(cfg.to_string().as_bytes()).unwrap()
}

const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfyv0FJtKZ8bZIYjO\n\
VB+fnPuAMcMa6VgFu8XsrF1UUu6hRANCAAT1tD44epT/ta2PQKzRv7Q/Bz1fE5z8\n\
xdvWepu+aFdDME922kc5BMST/1bpsT/we6tcJv455hS6f4+XRRgQFmb2\n\
-----END PRIVATE KEY-----\n";

fn random_answer(rng: &mut Lcg) -> CalloutResult {
    match rng.next() % 6 {
        0 => CalloutResult::TimedOut,
        1 => CalloutResult::Failed,
        2 => CalloutResult::Response {
            status: 200,
            body: format!(
                "{{\"active\":true,\"sub\":\"{}\",\"scope\":\"read\",\"exp\":{}}}",
                rng.junk().replace(['"', '\\'], ""),
                1_800_000_000 + rng.next() % 100
            )
            .into_bytes(),
        },
        3 => CalloutResult::Response {
            status: 200,
            body: format!(
                "{{\"access_token\":\"{}\",\"issued_token_type\":\"urn:ietf:params:oauth:token-type:access_token\",\"token_type\":\"Bearer\",\"expires_in\":{}}}",
                rng.junk().replace(['"', '\\'], ""),
                rng.next() % 100
            )
            .into_bytes(),
        },
        4 => CalloutResult::Response {
            status: 200,
            body: rng.junk().into_bytes(),
        },
        _ => CalloutResult::Response {
            status: (rng.next() % 600) as u16,
            body: rng.junk().into_bytes(),
        },
    }
}

/// Random API and web requests through policies, bearer checks and mediation, with random OP
/// and STS answers, interleaved so that requests wait on each other: never a panic, and nothing
/// reaches a protected resource without an identity the OP vouched for.
#[test]
fn random_api_and_policy_traffic_never_panics_or_passes_without_identity() {
    let settings = policy_settings();
    let mut vm = VmState::new(&settings);
    let mut rng = Lcg(11);
    let hosts = ["api", "intro", "gw", "other", "", "API", "gw:443"];
    let paths = [
        "/",
        "/static/x",
        "/open/y",
        "/admin/abc",
        "/l/1",
        "/pa/authtoken/JWKS",
        "/x",
    ];
    let tokens = ["t1", "t1", "t2", "eyJhbGciOiJFUzI1NiJ9.e30.sig", ""];
    let mut parked: Vec<(u32, RequestFlow, HeaderList)> = Vec::new();
    let mut in_flight: Vec<(u32, RequestFlow, HeaderList)> = Vec::new();
    let (mut checked, mut waits, mut wakes) = (0, 0, 0);
    let mut check = |action: &Action, headers: &HeaderList| {
        if let Action::Forward(f) = action {
            let path = headers.header(":path").unwrap_or_default();
            let unprotected = path.starts_with("/static/") || path.starts_with("/open/");
            let user = f.identity.iter().find(|(n, _)| n == "x-wam-user");
            let identified = matches!(user, Some((_, Some(_))));
            assert!(
                unprotected || identified,
                "forwarded without identity: {headers:?}"
            );
            checked += 1;
        }
    };
    for i in 0..20_000u32 {
        let ctx = i + 1;
        // Junk on a quarter of the paths only: most of it is refused at routing now (400), and
        // the rest must still reach the checks where requests wait on each other.
        let junk = match rng.next() % 4 {
            0 => rng.junk(),
            _ => String::new(),
        };
        let path = format!("{}{}", rng.pick(&paths), junk);
        // Mostly a few recurring tokens, so requests meet each other's checks under way.
        let token = if rng.next().is_multiple_of(16) {
            format!("{}{}", rng.pick(&tokens), rng.junk())
        } else {
            rng.pick(&tokens).to_string()
        };
        let auth = format!(
            "{}{}",
            rng.pick(&["Bearer ", "bearer ", "Basic ", ""]),
            token
        );
        let headers = HeaderList::new([
            (":method", rng.pick(&["GET", "POST", ""])),
            (":path", path.as_str()),
            (":authority", rng.pick(&hosts)),
            (
                ":source-address",
                rng.pick(&["10.0.0.1:1", "[::1]:2", "junk", ""]),
            ),
            ("authorization", auth.as_str()),
            ("cookie", rng.junk().as_str()),
            ("accept", rng.pick(&["text/html", "application/json"])),
        ]);
        let mut flow = RequestFlow::for_context(ctx);
        let mut entropy = Lcg(rng.next());
        let now = 1_800_000_000 + u64::from(i / 20);
        let action = flow.on_request(&settings, &mut vm, &headers, now, &mut entropy);
        let mut next = Some((ctx, flow, headers, action));
        // Some callout under way ends now: answered at random, or its client went away.
        if !in_flight.is_empty() && rng.next().is_multiple_of(2) {
            let at = (rng.next() as usize) % in_flight.len();
            let (c, mut flow, headers) = in_flight.swap_remove(at);
            if rng.next().is_multiple_of(5) {
                flow.on_abandon(&mut vm, now);
            } else {
                let answer = random_answer(&mut rng);
                let action =
                    flow.on_callout(&settings, &mut vm, &headers, answer, now, &mut entropy);
                settle(
                    c,
                    flow,
                    headers,
                    action,
                    &mut in_flight,
                    &mut parked,
                    &mut check,
                    &mut waits,
                );
            }
        }
        if let Some((c, flow, headers, action)) = next.take() {
            settle(
                c,
                flow,
                headers,
                action,
                &mut in_flight,
                &mut parked,
                &mut check,
                &mut waits,
            );
        }
        // Wake whoever was released, in the order the host would.
        for (woken, why) in std::mem::take(&mut vm.woken) {
            if let Some(at) = parked.iter().position(|(c, _, _)| *c == woken) {
                let (c, mut flow, headers) = parked.swap_remove(at);
                wakes += 1;
                let action = flow.on_wake(&settings, &mut vm, &headers, why, now, &mut entropy);
                settle(
                    c,
                    flow,
                    headers,
                    action,
                    &mut in_flight,
                    &mut parked,
                    &mut check,
                    &mut waits,
                );
            }
        }
        parked.retain(|_| !rng.next().is_multiple_of(50)); // some waiters give up
    }
    assert!(checked > 100, "some requests went through ({checked})");
    eprintln!("checked={checked} waits={waits} wakes={wakes}");
    assert!(
        waits > 20 && wakes > 20,
        "requests waited ({waits}) and were woken ({wakes})"
    );
}

type Parked = Vec<(u32, RequestFlow, HeaderList)>;

/// Files a request by what it does next: waits on a callout, waits on another request, or is
/// answered (checked).
#[allow(clippy::too_many_arguments)]
fn settle(
    ctx: u32,
    flow: RequestFlow,
    headers: HeaderList,
    action: Action,
    in_flight: &mut Parked,
    parked: &mut Parked,
    check: &mut impl FnMut(&Action, &HeaderList),
    waits: &mut u32,
) {
    match action {
        Action::Callout(_) => in_flight.push((ctx, flow, headers)),
        Action::Wait => {
            *waits += 1;
            parked.push((ctx, flow, headers));
        }
        other => check(&other, &headers),
    }
}
