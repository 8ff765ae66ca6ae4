"""Starts the real parts on 127.0.0.1 for tests, benchmarks and the demo: Envoy (from .venv),
the OpenID Provider (integration/op), the echo backend; renders Envoy's bootstrap; and drives
a login through the OP's form. Every process runs in its own process group and is stopped,
with its children, by `stop()`.
"""

import atexit
import base64
import ctypes
import html
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
ENVOY = os.path.join(VENV_BIN, "envoy")
# wasm-build.sh builds it (cargo, then wasm-opt). ENVOY_WAM_WASM: run the tests against a
# .wasm built elsewhere (then it is not rebuilt here).
WAM_WASM = os.environ.get("ENVOY_WAM_WASM") or os.path.join(ROOT, "target", "envoy_wam.wasm")
# The native build (./native-build.sh): the same core as an Envoy dynamic module.
WAM_SO = os.environ.get("ENVOY_WAM_SO") or os.path.join(ROOT, "target", "libenvoy_wam.so")
# Which build "wam" means: "wasm" or "native". The tests' `built` fixture sets it per
# parameter (ENVOY_WAM_BUILDS, e.g. "wasm,native"); scripts take ENVOY_WAM_BUILD.
BUILD = os.environ.get("ENVOY_WAM_BUILD", "wasm")
NOOP_DIR = os.path.join(ROOT, "integration", "noop-filter")
NOOP_WASM = os.path.join(NOOP_DIR, "target", "wasm32-wasip1", "release", "noop_filter.wasm")
FLOOR_DIR = os.path.join(ROOT, "integration", "floor-filter")
FLOOR_WASM = os.path.join(FLOOR_DIR, "target", "wasm32-wasip1", "release", "floor_filter.wasm")
# The native counterparts (one .so, configured "noop" or "floor"): benchmarks only.
FLOOR_NATIVE_DIR = os.path.join(ROOT, "integration", "floor-native")
FLOOR_NATIVE_SO = os.path.join(FLOOR_NATIVE_DIR, "target", "release", "libfloor_native.so")
CLIENT_SECRET = "demo-secret-change-me-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_native():
    """Builds target/libenvoy_wam.so (a no-op when up to date) unless ENVOY_WAM_SO names one."""
    if not os.environ.get("ENVOY_WAM_SO"):
        subprocess.run([os.path.join(ROOT, "native-build.sh")], check=True, stdout=subprocess.DEVNULL)


def build_wasm(references=(NOOP_DIR,), native=None):
    """Builds the filter (a no-op when up to date) and the reference filters named; the native
    build too when `native` (default: when BUILD is "native")."""
    if not os.environ.get("ENVOY_WAM_WASM"):
        subprocess.run([os.path.join(ROOT, "wasm-build.sh")], check=True, stdout=subprocess.DEVNULL)
    if native or (native is None and BUILD == "native"):
        build_native()
    for crate in references:
        target = [] if crate == FLOOR_NATIVE_DIR else ["--target", "wasm32-wasip1"]
        subprocess.run(["cargo", "build", "--quiet", "--release"] + target, cwd=crate, check=True)


_LIVE = set()

try:
    _prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    """In the child, before exec: get SIGTERM when the thread that started it ends, so not even
    a killed pytest leaves servers behind (Linux prctl PR_SET_PDEATHSIG). Start processes from
    the main thread (or a thread that outlives them)."""
    _prctl(1, int(signal.SIGTERM), 0, 0, 0)


@atexit.register
def stop_all():
    """Stops every process started here that is still running (also run at interpreter exit)."""
    for p in list(_LIVE):
        p.stop()


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name, argv, env=None, cwd=None, logdir=None):
        self.name = name
        logdir = logdir or tempfile.mkdtemp(prefix="envoy-wam-")
        self.log_path = os.path.join(logdir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        self.p = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if _prctl else None,
        )
        _LIVE.add(self)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.p.poll() is None

    def wait_until(self, ready, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.p.returncode}):\n{self.log()[-3000:]}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log()[-3000:]}")

    def stop(self):
        if self.alive():
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(timeout=10)
        _LIVE.discard(self)
        self._log.close()


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_op(port, gateway_urls, logdir=None, issuer=None, env=None, name="op"):
    """The OP (and STS) on `port`. `env` adds or overrides op.mjs's environment, e.g.
    {"STS_TOKEN_TTL": "3"}, {"OP_SHORT_TOKEN_TTL": "2"} or {"GATEWAY_JWKS_URLS": "..."} (by
    default the STS trusts <gateway>/pa/authtoken/JWKS of every gateway URL)."""
    issuer = issuer or f"http://127.0.0.1:{port}"
    p = Proc(
        name,
        ["node", os.path.join(ROOT, "integration", "op", "op.mjs")],
        env={
            "OP_PORT": str(port),
            "OP_HOST": "127.0.0.1",
            "OP_ISSUER": issuer,
            "GATEWAY_URLS": ",".join(gateway_urls),
            "PA_WAM_SECRET": CLIENT_SECRET,
            **(env or {}),
        },
        logdir=logdir,
    )
    p.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/.well-known/openid-configuration"))
    p.issuer = issuer
    p.port = port
    p.gateway_urls = list(gateway_urls)
    p.env = dict(env or {})
    return p


def start_backend(port, logdir=None):
    p = Proc("backend", [sys.executable, os.path.join(ROOT, "integration", "backend", "echo.py"), str(port)], logdir=logdir)
    p.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"))
    p.port = port
    return p


def wam_config(op_issuer, client_id="pa_wam", **overrides):
    """A filter configuration for an OP at `op_issuer` (oidc-provider's endpoint paths)."""
    cfg = {
        "op": {
            "issuer": op_issuer,
            "cluster": "op",
            "authorization_endpoint": f"{op_issuer}/auth",
            "token_endpoint": f"{op_issuer}/token",
            "jwks_uri": f"{op_issuer}/jwks",
            "end_session_endpoint": f"{op_issuer}/session/end",
            "timeout_ms": 3000,
        },
        "client": {
            "client_id": client_id,
            "client_secret": CLIENT_SECRET,
            "scopes": ["openid", "profile", "email", "groups"],
        },
        "session": {
            "cookie_secure": False,
            "signing_keys": [{"kid": "k1", "secret": base64.b64encode(os.urandom(32)).decode()}],
            "claims": ["email", "name", "groups"],
        },
        "identity_headers": [
            {"header": "x-wam-user", "claim": "sub"},
            {"header": "x-wam-email", "claim": "email"},
            {"header": "x-wam-groups", "claim": "groups"},
        ],
    }
    for path, value in overrides.items():
        node = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return cfg


def _cluster(name, port):
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


# Envoy's own request normalisation, in front of the filter: paths normalised (dot segments,
# //, escaped slashes unescaped with a redirect), header names with `_` refused (they could
# otherwise pass for identity headers at a backend that reads `_` as `-`), Host's trailing dot
# removed. Without it Envoy's defaults apply: nothing normalised, KEEP_UNCHANGED, underscores
# ALLOW.
_NORMALIZE = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
    "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
    "strip_trailing_host_dot": True,
}


def _needs_redirect_uri(cfg):
    """The filter refuses to build redirects from a Host a `*` application accepts: such
    configurations must name client.redirect_uri (no policy, a `*` host, or default allow)."""
    policy = cfg.get("policy")
    if policy is None or policy.get("default_decision") == "allow":
        return True
    return any("*" in app.get("hosts", []) for app in policy.get("applications", []))


def with_redirect_uri(cfg, gateway_url):
    """`cfg` with client.redirect_uri set to this gateway's callback where the filter needs one
    and the test did not set it (what an operator writes for a gateway at `gateway_url`); the
    same for each named web session (its callback <base>/oidc/cb/<name>)."""
    if cfg is None or not _needs_redirect_uri(cfg):
        return cfg
    missing = "redirect_uri" not in cfg.get("client", {}) or any("redirect_uri" not in w.get("client", {}) for w in cfg.get("web_sessions", []))
    if not missing:
        return cfg
    cfg = json.loads(json.dumps(cfg))
    base = cfg.get("base_path", "/pa").rstrip("/")
    cfg.setdefault("client", {}).setdefault("redirect_uri", f"{gateway_url}{base}/oidc/cb")
    for w in cfg.get("web_sessions", []):
        w.setdefault("client", {}).setdefault("redirect_uri", f"{gateway_url}{base}/oidc/cb/{w.get('name', '')}")
    return cfg


def envoy_bootstrap(listen_port, admin_port, filter="wam", config=None, backend_port=None, op_port=None, wasm=None, clusters=None, http_filters=None, normalize=True, access_log=None):
    """Envoy's bootstrap (JSON is valid YAML). `filter` is "wam", "noop" or "none"; without a
    backend port, every route answers 200 itself (direct_response) so benchmarks measure the
    filter, not the backend. `clusters` adds clusters {name: port} on 127.0.0.1 (e.g. an STS
    cluster); `http_filters` adds filters before the wasm filter (e.g. native jwt_authn).
    `normalize` False leaves Envoy's own request normalisation at its defaults (all off), so the
    filter alone stands between a hostile request and the backend. `access_log` names a file
    for Envoy's access log in ACCESS_LOG_FORMAT (the filter's access-log fields among them)."""
    http_filters = list(http_filters or [])
    if filter == "wam" and BUILD == "native" and not wasm:
        filter = "wam-native"
    native = filter == "wam-native"
    if native:
        http_filters.append(native_filter(with_redirect_uri(config, f"http://127.0.0.1:{listen_port}")))
    elif filter == "wam-wasm":
        filter = "wam"
    if filter in ("wam", "noop"):
        code = wasm or (WAM_WASM if filter == "wam" else NOOP_WASM)
        wasm_config = {
            "name": "envoy-wam" if filter == "wam" else "noop",
            "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": code}}},
        }
        if filter == "wam":
            config = with_redirect_uri(config, f"http://127.0.0.1:{listen_port}")
            wasm_config["configuration"] = {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": json.dumps(config),
            }
        http_filters.append(
            {
                "name": "envoy.filters.http.wasm",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": wasm_config},
            }
        )
    http_filters.append(
        {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    )
    if backend_port:
        route = {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}
    else:
        route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "hello\n"}}}
    clusters = [_cluster(name, port) for name, port in (clusters or {}).items()]
    if backend_port:
        clusters.append(_cluster("backend", backend_port))
    if op_port:
        clusters.append(_cluster("op", op_port))
    return {
        **({"layered_runtime": NATIVE_RUNTIME} if native else {}),
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "gateway",
                                        # An edge proxy: the client address is the peer's, not
                                        # whatever X-Forwarded-For a client sends (Envoy's advice
                                        # for edge deployments; network rules rely on it).
                                        "use_remote_address": True,
                                        **(_NORMALIZE if normalize else {}),
                                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
                                        **({"access_log": [file_access_log(access_log)]} if access_log else {}),
                                        "http_filters": http_filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


# Envoy's tag extraction for envoy-wam's metrics (see examples/envoy-stats-tags.yaml, which
# holds the same regexes): a `.<label>.<value>` segment of a name under wasmcustom.envoy_wam
# becomes a label, so /stats/prometheus shows envoy_wam_decisions_total{app="portal",...}.
WAM_STAT_LABELS = ("app", "outcome", "reason", "result", "status", "upstream", "cache")


def wam_stats_tags():
    return [{"tag_name": label, "regex": r"^wasmcustom\.envoy_wam\.\w+(?:\.\w+\.[^.]+)*?(\." + label + r"\.([^.]+))"} for label in WAM_STAT_LABELS]


def prometheus_samples(admin_port, prefix="envoy_wam_"):
    """Envoy's /stats/prometheus as {(name, frozenset of (label, value))): value} for the
    samples whose name starts with `prefix`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or not m.group(1).startswith(prefix):
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


# Envoy's access log with envoy-wam's fields (`access_log_fields`), one JSON object a line.
ACCESS_LOG_FORMAT = {
    "status": "%RESPONSE_CODE%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "subject": "%FILTER_STATE(wasm.envoy_wam.subject:PLAIN)%",
    "application": "%FILTER_STATE(wasm.envoy_wam.application:PLAIN)%",
    "resource": "%FILTER_STATE(wasm.envoy_wam.resource:PLAIN)%",
    "decision": "%FILTER_STATE(wasm.envoy_wam.decision:PLAIN)%",
}


def file_access_log(path):
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": ACCESS_LOG_FORMAT},
        },
    }


# What the native build's Envoy needs so that /stats/prometheus names its metrics as the wasm
# build's (envoy_wam_*, not envoy_wasmcustom_envoy_wam_*): Envoy 1.40 strips a dynamic module's
# metrics_namespace from Prometheus names only with this runtime flag (off by default), as it
# always does for wasm's `wasmcustom`. envoy/envoy-native-demo.yaml sets the same.
NATIVE_RUNTIME = {
    "layers": [
        {"name": "static", "static_layer": {"envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix": True}},
    ]
}


def native_filter(config, so=None):
    """The native build as an HTTP filter: Envoy's dynamic-modules filter loading the .so, with
    the same JSON configuration as the wasm filter's."""
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            # The wasm build's stats namespace: both builds serve the same metric names.
            "dynamic_module_config": {"module": {"local": {"filename": so or WAM_SO}}, "do_not_close": True, "metrics_namespace": "wasmcustom"},
            "filter_name": "envoy-wam",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(config)},
        },
    }


def lds_bootstrap(bootstrap, lds_dir):
    """`bootstrap` turned into a file-LDS one: its listeners go to `lds_dir`/listeners.json
    (written as `write_lds` does), Envoy watches the directory and takes a new file when one is
    moved into place. Returns the new bootstrap."""
    os.makedirs(lds_dir, exist_ok=True)
    write_lds(lds_dir, bootstrap["static_resources"]["listeners"])
    return {
        "node": {"id": "envoy-wam", "cluster": "envoy-wam"},
        **({"layered_runtime": bootstrap["layered_runtime"]} if "layered_runtime" in bootstrap else {}),
        "admin": bootstrap["admin"],
        "static_resources": {"clusters": bootstrap["static_resources"]["clusters"]},
        "dynamic_resources": {
            "lds_config": {
                "path_config_source": {"path": os.path.join(lds_dir, "listeners.json"), "watched_directory": {"path": lds_dir}},
                "resource_api_version": "V3",
            }
        },
    }


def write_lds(lds_dir, listeners):
    """Replaces the listeners Envoy reads from `lds_dir` the way Envoy asks for: written
    elsewhere in the directory, then renamed over the watched file (atomic)."""
    resources = [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **l} for l in listeners]
    tmp = os.path.join(lds_dir, f".listeners.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"resources": resources}, f)
    os.rename(tmp, os.path.join(lds_dir, "listeners.json"))


def admin_stats(admin_port, filter=None):
    """Envoy's /stats as {name: value} (counters and gauges; histograms left out)."""
    url = f"http://127.0.0.1:{admin_port}/stats" + (f"?filter={urllib.parse.quote(filter)}" if filter else "")
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def start_envoy(listen_port, bootstrap, concurrency=1, logdir=None, name="envoy", wait=True, env=None, args=()):
    """Envoy with `bootstrap`; `args` are more command-line arguments (e.g. --drain-time-s)."""
    logdir = logdir or tempfile.mkdtemp(prefix="envoy-wam-")
    path = os.path.join(logdir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(bootstrap, f)
    admin = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    p = Proc(
        name,
        [ENVOY, "-c", path, "--concurrency", str(concurrency), "--disable-hot-restart", "-l", "info", *args],
        logdir=logdir,
        env=env,
    )
    p.port = listen_port
    p.url = f"http://127.0.0.1:{listen_port}"
    p.admin_port = admin
    if wait:
        p.wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"))
    return p


# --- driving a login ---------------------------------------------------------------------

FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"', re.I)
HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.I)


def submit_login_form(session, page, username, password="any-password"):
    """Fills in oidc-provider's development login form on `page` and follows redirects."""
    m = FORM_ACTION.search(page.text)
    assert m, f"no login form at {page.url}:\n{page.text[:500]}"
    action = urllib.parse.urljoin(page.url, html.unescape(m.group(1)))
    data = {name: html.unescape(value) for name, value in HIDDEN.findall(page.text)}
    data.update({"login": username, "password": password})
    return session.post(action, data=data, allow_redirects=True, timeout=10)


def login(session, gateway_url, path="/", username="alice"):
    """A whole browser-style login through the gateway and the OP's form, with a
    cookie-keeping `requests.Session`. Returns the final response (the backend's answer)."""
    first = session.get(gateway_url + path, headers={"accept": "text/html"}, allow_redirects=True, timeout=10)
    assert "/interaction/" in first.url, f"expected the OP's login page, got {first.url} {first.status_code}"
    return submit_login_form(session, first, username)


def op_stats(op_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{op_port}/__stats", timeout=5) as r:
        return json.load(r)


# --- OAuth helpers against the OP (client_credentials, introspection, revocation, RFC 8693) --

API_CLIENT = "api_client"
STS_CLIENT = "pa_sts"
API_RESOURCE = "https://api.example.test"  # JWT access tokens (RS256)
OTHER_RESOURCE = "https://other.example.test"  # JWT, another audience
SHORT_RESOURCE = "https://short.example.test"  # JWT, OP_SHORT_TOKEN_TTL (3 s)
ES_RESOURCE = "https://es.example.test"  # JWT signed with ES256
OPAQUE_RESOURCE = "https://opaque.example.test"  # opaque, for introspection
OPAQUE_SHORT_RESOURCE = "https://opaque-short.example.test"  # opaque, OP_SHORT_TOKEN_TTL
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"


def _basic(client_id, secret=CLIENT_SECRET):
    # RFC 6749 2.3.1: form-urlencode id and secret before base64 (oidc-provider insists).
    raw = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def _post_form(url, form, client_id):
    """POST a form with client_secret_basic; returns (status, parsed JSON or text)."""
    body = urllib.parse.urlencode(form, doseq=True).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"authorization": _basic(client_id), "content-type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def client_credentials(op, resource=None, scope="orders:read orders:write", client_id=API_CLIENT):
    """The OP's whole token answer for a client_credentials grant (raises unless 200)."""
    form = {"grant_type": "client_credentials"}
    if resource:
        form["resource"] = resource
    if scope:
        form["scope"] = scope
    status, answer = _post_form(f"{op.issuer}/token", form, client_id)
    if status != 200:
        raise RuntimeError(f"client_credentials: {status} {answer}")
    return answer


def client_credentials_token(op, resource=None, scope="orders:read orders:write", client_id=API_CLIENT):
    """An access token for api_client: a JWT for the JWT resources, opaque otherwise."""
    return client_credentials(op, resource, scope, client_id)["access_token"]


def introspect(op, token, client_id="pa_wam"):
    """RFC 7662 introspection as the gateway (pa_wam) does it; the answer's JSON."""
    status, answer = _post_form(f"{op.issuer}/token/introspection", {"token": token}, client_id)
    if status != 200:
        raise RuntimeError(f"introspection: {status} {answer}")
    return answer


def revoke(op, token, client_id=API_CLIENT):
    """RFC 7009 revocation by the token's own client."""
    status, answer = _post_form(f"{op.issuer}/token/revocation", {"token": token}, client_id)
    if status != 200:
        raise RuntimeError(f"revocation: {status} {answer}")


def token_exchange(op, subject_token, subject_token_type=TT_ACCESS_TOKEN, audience=None, resource=None, scope=None, client_id=STS_CLIENT, **extra):
    """RFC 8693 token exchange at the OP's STS. Returns (status, JSON answer)."""
    form = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token, "subject_token_type": subject_token_type, **extra}
    for key, value in (("audience", audience), ("resource", resource), ("scope", scope)):
        if value is not None:
            form[key] = value
    return _post_form(f"{op.issuer}/token", form, client_id)


def op_jwks(op):
    with urllib.request.urlopen(f"{op.issuer}/jwks", timeout=5) as r:
        return json.load(r)


def reset_op_stats(op_port):
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{op_port}/__stats/reset", method="POST"), timeout=5).read()


def envoy_log_lines(envoy, kind="audit"):
    """The JSON objects the filter logged as `envoy-wam: <kind>: {...}` (the colon after
    envoy-wam optional), e.g. the audit lines."""
    pattern = re.compile(r"envoy-wam:? " + re.escape(kind) + r": (\{.*\})\s*$")
    out = []
    for line in envoy.log().splitlines():
        m = pattern.search(line)
        if m:
            try:
                out.append(json.loads(m.group(1)))
            except ValueError:
                pass
    return out


# --- raw HTTP/1.1, for requests no client library may tidy up -----------------------------------


class RawAnswer:
    """A response read off the socket: status, headers (an email.message.Message: get, get_all,
    case-insensitive), body bytes."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self):
        return self.body.decode(errors="replace")

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name)

    def all(self, name):
        return self.headers.get_all(name) or []

    def __repr__(self):
        keep = ("location", "content-type", "allow", "www-authenticate", "set-cookie")
        shown = {k: v for k, v in self.headers.items() if k.lower() in keep}
        return f"<{self.status} {shown} {self.text[:600]!r}>"


def raw_http(port, target, headers=(), method="GET", host=None, body=b""):
    """One HTTP/1.1 request to 127.0.0.1:`port` as exactly these bytes, on its own connection:
    the target unchanged (requests and urllib3 resolve `..` and re-quote escapes before
    sending), header names and values unchanged, repeated names kept. `headers` is a list of
    (name, value), str or bytes; Host defaults to 127.0.0.1:`port`."""

    def b(x):
        return x if isinstance(x, bytes) else x.encode("latin-1")

    head = [("host", f"127.0.0.1:{port}" if host is None else host)] + list(headers)
    if body or method in ("POST", "PUT", "PATCH"):
        head.append(("content-length", str(len(body))))
    head.append(("connection", "close"))
    data = b(f"{method} ") + b(target) + b" HTTP/1.1\r\n" + b"".join(b(n) + b": " + b(v) + b"\r\n" for n, v in head) + b"\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        r = http.client.HTTPResponse(s, method=method)
        r.begin()
        return RawAnswer(r.status, r.msg, r.read())


def start_gateway(port, config, backend_port, op_port, logdir=None, name=None, concurrency=1, clusters=None, wait=True, normalize=True):
    """Envoy with envoy-wam on `port` (one of the gateway URLs the OP knows), the backend and
    the OP as clusters, plus `clusters` {name: port}; `normalize` as in envoy_bootstrap."""
    bootstrap = envoy_bootstrap(port, free_port(), "wam", config, backend_port, op_port, clusters=clusters, normalize=normalize)
    return start_envoy(port, bootstrap, concurrency=concurrency, logdir=logdir, name=name or f"envoy-{port}", wait=wait)


class Sink:
    """A server that accepts connections and never answers (a slow OP or STS)."""

    def __init__(self):
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._t.join()
        for c in self.conns:
            c.close()
        self.sock.close()


# --- sessions validated at the OP (issue 10): OP hooks, logout at the OP, cookies, OP down ---


def live_config(op_issuer, client_id="pa_wam", **overrides):
    """wam_config plus the OP endpoints that validated sessions use: userinfo (/me) and RFC 7009
    revocation, named like the discovery metadata (op.userinfo_endpoint,
    op.revocation_endpoint). `overrides` as in wam_config, e.g.
    {"session.validate_interval_s": 1, "session.validation_grace_s": 3}."""
    base = {"op.userinfo_endpoint": f"{op_issuer}/me", "op.revocation_endpoint": f"{op_issuer}/token/revocation"}
    return wam_config(op_issuer, client_id, **{**base, **overrides})


# --- several OPs (issue 11): a partner OP, named web sessions, token providers ---------------

# The partner OP's users (any other login name works too, in no group).
PARTNER_GROUPS = {"carol": ["partners"], "dave": ["partners", "buyers"]}


def start_partner_op(port, gateway_urls, web_session="partner", logdir=None, issuer=None, env=None, groups=None):
    """A second OP (op.mjs) for the gateway's web session `web_session`: its web clients
    (pa_wam, ...) register <gateway><base>/oidc/cb/<web_session> as redirect URI and
    <first gateway>/pa/oidc/backchannel/<web_session> for back-channel logout; its cookies are
    named <web_session>_session etc. (a browser keeps cookies per host, not per port, so two
    OPs on 127.0.0.1 would otherwise overwrite each other's session); its users' groups are
    `groups` (PARTNER_GROUPS). Same client ids and secret as the first OP, its own keys."""
    extra = {
        "GATEWAY_CALLBACK_PATH": f"/pa/oidc/cb/{web_session}",
        "BACKCHANNEL_PATH": f"/pa/oidc/backchannel/{web_session}",
        "OP_COOKIE_PREFIX": web_session,
        "OP_GROUPS": json.dumps(PARTNER_GROUPS if groups is None else groups),
        **(env or {}),
    }
    return start_op(port, gateway_urls, logdir=logdir, issuer=issuer, env=extra, name=f"op-{web_session}")


def op_section(op_issuer, cluster="op", discovery=False):
    """An `op` section for oidc-provider at `op_issuer`, reached through Envoy cluster
    `cluster`: its endpoints written out, or (`discovery`) fetched from its discovery
    document."""
    if discovery:
        return {"issuer": op_issuer, "cluster": cluster, "discovery": True, "timeout_ms": 3000}
    return {
        "issuer": op_issuer,
        "cluster": cluster,
        "authorization_endpoint": f"{op_issuer}/auth",
        "token_endpoint": f"{op_issuer}/token",
        "jwks_uri": f"{op_issuer}/jwks",
        "end_session_endpoint": f"{op_issuer}/session/end",
        "timeout_ms": 3000,
    }


def web_session(name, op_issuer, cluster, client_id="pa_wam", discovery=False, **overrides):
    """One entry of `web_sessions`: sign-in at the OP `op_issuer` through Envoy cluster
    `cluster` as `client_id`, a cookie PA.<name> with keys of its own, and identity headers
    x-<name>-user, x-<name>-email, x-<name>-groups. `overrides` as in wam_config, relative to
    the entry (e.g. {"session.cookie_name": "PA.wam"})."""
    entry = {
        "name": name,
        "op": op_section(op_issuer, cluster, discovery),
        "client": {"client_id": client_id, "client_secret": CLIENT_SECRET, "scopes": ["openid", "profile", "email", "groups"]},
        "session": {
            "cookie_name": f"PA.{name}",
            "cookie_secure": False,
            "signing_keys": [{"kid": f"{name}-1", "secret": base64.b64encode(os.urandom(32)).decode()}],
            "claims": ["email", "name", "groups"],
        },
        "identity_headers": [
            {"header": f"x-{name}-user", "claim": "sub"},
            {"header": f"x-{name}-email", "claim": "email"},
            {"header": f"x-{name}-groups", "claim": "groups"},
        ],
    }
    for path, value in overrides.items():
        node = entry
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return entry


def token_provider(name, op_issuer, cluster, audiences, validation="jwt"):
    """One entry of `token_providers`: bearer tokens of the OP `op_issuer` (its JWKS, or its
    introspection endpoint as pa_wam), reached through Envoy cluster `cluster`."""
    op = {"issuer": op_issuer, "cluster": cluster, "timeout_ms": 3000}
    entry = {"name": name, "op": op, "validation": validation, "audiences": list(audiences)}
    if validation == "jwt":
        op["jwks_uri"] = f"{op_issuer}/jwks"
    else:
        op["introspection_endpoint"] = f"{op_issuer}/token/introspection"
        entry["client"] = {"client_id": "pa_wam", "client_secret": CLIENT_SECRET}
    return entry


def two_op_config(corp_issuer, partner_issuer, partner_cluster="partner_op", partner_discovery=False, partner=None, hosts=("*",)):
    """A configuration with two web sessions: the default one (wam_config, the corporate OP,
    cluster `op`) for every application but `/partner/`, which signs in at the partner OP
    (web session `partner`, cluster `partner_cluster`). `partner`: overrides for the partner
    entry as in web_session. Applications: `corp` (/), `partner` (/partner), and `api` (/api,
    type api, accepting JWT access tokens for API_RESOURCE from both OPs: token providers
    `corp-tokens` and `partner-tokens`)."""
    cfg = wam_config(corp_issuer)
    cfg["clock_skew_s"] = 1
    cfg["web_sessions"] = [web_session("partner", partner_issuer, partner_cluster, discovery=partner_discovery, **(partner or {}))]
    cfg["token_providers"] = [
        token_provider("corp-tokens", corp_issuer, "op", [API_RESOURCE]),
        token_provider("partner-tokens", partner_issuer, partner_cluster, [API_RESOURCE]),
    ]
    every = {"name": "all", "paths": ["/*"]}
    cfg["policy"] = {
        "applications": [
            {"name": "corp", "hosts": list(hosts), "context_root": "/", "type": "web", "resources": [every]},
            {"name": "partner", "hosts": list(hosts), "context_root": "/partner", "type": "web", "web_session": "partner", "resources": [every]},
            {"name": "api", "hosts": list(hosts), "context_root": "/api", "type": "api", "api": {"token_providers": ["corp-tokens", "partner-tokens"]}, "resources": [every]},
        ]
    }
    return cfg


def _op_call(op_url, path, method="POST", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{op_url}{path}", data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def op_disable_user(op, sub):
    """The OP forgets `sub` (POST /__users/disable): refresh grants invalid_grant, userinfo 401."""
    assert _op_call(op.issuer, f"/__users/disable?sub={urllib.parse.quote(sub)}")[0] == 200


def op_enable_user(op, sub):
    assert _op_call(op.issuer, f"/__users/enable?sub={urllib.parse.quote(sub)}")[0] == 200


def op_set_groups(op, sub, groups):
    """`sub`'s groups at the OP from now on (POST /__groups)."""
    q = urllib.parse.urlencode({"sub": sub, "groups": ",".join(groups)})
    assert _op_call(op.issuer, f"/__groups?{q}")[0] == 200


def op_sign(op, claims, header=None):
    """A JWS over `claims` signed with the OP's own key (POST /__sign): RS256, kid op-rsa-1,
    typ logout+jwt unless `header` says otherwise (a member None: left out)."""
    status, answer = _op_call(op.issuer, "/__sign", body={"claims": claims, **({"header": header} if header else {})})
    assert status == 200, answer
    return answer["jws"]


def op_session(session, op_url):
    """The OP session behind the OP cookies in `session` (a requests.Session that logged in):
    {accountId, uid, clients: {client_id: {sid, grantId, grantActive}}}."""
    r = session.get(f"{op_url}/__session", timeout=5)
    r.raise_for_status()
    return r.json()


_LOGOUT_FORM = re.compile(r'<form[^>]*id="op\.logoutForm"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.I | re.S)


def op_logout(session, op_url):
    """The user logs out at the OP with the browser `session` that logged in (its OP cookies):
    RP-initiated logout at /session/end, then its confirm form with logout=yes, which ends the
    whole OP session, revokes the clients' grants and sends each client's back-channel logout
    notice (before it answers). Returns the confirm's final response."""
    page = session.get(f"{op_url}/session/end", timeout=10)
    assert page.status_code == 200, page.text[:500]
    m = _LOGOUT_FORM.search(page.text)
    assert m, f"no logout form at the OP (no OP session in these cookies?):\n{page.text[:500]}"
    action = urllib.parse.urljoin(page.url, html.unescape(m.group(1)))
    data = {name: html.unescape(value) for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', m.group(2))}
    data["logout"] = "yes"
    done = session.post(action, data=data, allow_redirects=True, timeout=10)
    assert done.status_code == 200, done.text[:500]
    return done


def restart_op(p, env=None):
    """Stops the OP `p` and starts a new one on the same port, issuer and gateways (OP down,
    then back). Everything the OP held is lost: sessions, grants, tokens, and its keys (new
    ones, same key ids)."""
    p.stop()
    return start_op(p.port, p.gateway_urls, logdir=os.path.dirname(p.log_path), issuer=p.issuer, env={**p.env, **(env or {})}, name=p.name)


# --- Set-Cookie, as a browser reads it ------------------------------------------------------


def set_cookies(response):
    """The Set-Cookie headers of one response (not of its redirects), parsed: a list of
    {"name", "value", "attrs" (lowercased name -> value or True), "raw"}."""
    out = []
    for raw in response.raw.headers.getlist("set-cookie"):
        pair, *attrs = [part.strip() for part in raw.split(";")]
        name, _, value = pair.partition("=")
        parsed = {}
        for a in attrs:
            k, eq, v = a.partition("=")
            parsed[k.strip().lower()] = v.strip() if eq else True
        out.append({"name": name.strip(), "value": value.strip(), "attrs": parsed, "raw": raw})
    return out


def is_removal(cookie):
    """A Set-Cookie that deletes the cookie (Max-Age=0 or an Expires in the past)."""
    a = cookie["attrs"]
    if "max-age" in a:
        try:
            return int(a["max-age"]) <= 0
        except (TypeError, ValueError):
            return False
    return "expires" in a and "1970" in str(a["expires"])


def apply_set_cookies(jar, *responses):
    """Applies the Set-Cookie headers of `responses` (each with its redirects, in order) to
    `jar` (a dict name -> value) as a browser would. Returns `jar`."""
    for response in responses:
        for r in [*response.history, response]:
            for c in set_cookies(r):
                if is_removal(c):
                    jar.pop(c["name"], None)
                else:
                    jar[c["name"]] = c["value"]
    return jar


CHUNK = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)$")


def session_chunks(cookies, name="PA.wam"):
    """The session cookie's parts in `cookies` (a dict, or a requests cookie jar): [value] for a
    single `name` cookie, or the values of `name`.0, `name`.1, ... in index order."""
    items = dict(cookies) if not hasattr(cookies, "get_dict") else cookies.get_dict()
    chunks = {}
    for k, v in items.items():
        m = CHUNK.match(k)
        if m and m.group("base") == name:
            chunks[int(m.group("index"))] = v
    if chunks:
        assert name not in items, f"both {name} and {name}.N cookies: {sorted(items)}"
        assert sorted(chunks) == list(range(len(chunks))), f"chunks not contiguous: {sorted(chunks)}"
        return [chunks[i] for i in sorted(chunks)]
    return [items[name]] if name in items else []


def cookie_header(cookies):
    return "; ".join(f"{k}={v}" for k, v in dict(cookies).items())


# --- an OP that goes down for the gateway: a TCP relay that can be switched off -------------


class Relay:
    """A TCP relay from a local port to 127.0.0.1:`target_port`. Point the gateway's `op`
    cluster at `relay.port`: `down()` closes every relayed connection and resets new ones
    (counted in `refused`), `up()` relays again. The browser still reaches the OP directly."""

    def __init__(self, target_port):
        import threading

        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.is_up = True
        self.accepted = 0
        self.refused = 0
        self._pairs = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self):
        import threading

        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if not self.is_up:
                self.refused += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # RST
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                conn.close()
                continue
            self.accepted += 1
            with self._lock:
                self._pairs.append((conn, upstream))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self):
        self.is_up = False
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def up(self):
        self.is_up = True

    def close(self):
        self.down()
        self._stop.set()
        self._t.join()
        self.sock.close()


def rp_login(op, redirect_origin, username="alice", client_id="pa_wam", scope="openid profile email groups"):
    """A relying party's whole code flow at the OP without a gateway (for tests of the OP
    itself): the browser `session` logs in at the OP's form and comes back to
    <redirect_origin>/pa/oidc/cb (something must answer there), then the code is redeemed with
    PKCE. Returns (session, the token endpoint's JSON answer)."""
    import hashlib
    import requests

    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = f"{redirect_origin}/pa/oidc/cb"
    q = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": "s" * 43,
        "nonce": "n" * 43,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    session = requests.Session()
    page = session.get(f"{op.issuer}/auth?{urllib.parse.urlencode(q)}", timeout=10)
    done = submit_login_form(session, page, username)
    back = urllib.parse.urlsplit(done.url)
    assert back.path == "/pa/oidc/cb", done.url
    code = dict(urllib.parse.parse_qsl(back.query))["code"]
    status, answer = _post_form(f"{op.issuer}/token", {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}, client_id)
    assert status == 200, answer
    return session, answer


def refresh_grant(op, refresh_token, client_id="pa_wam"):
    """A refresh-token grant as the gateway makes it; (status, JSON answer)."""
    return _post_form(f"{op.issuer}/token", {"grant_type": "refresh_token", "refresh_token": refresh_token}, client_id)


def userinfo(op, access_token):
    """GET /me with the access token; (status, JSON answer or text)."""
    req = urllib.request.Request(f"{op.issuer}/me", headers={"authorization": f"Bearer {access_token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
