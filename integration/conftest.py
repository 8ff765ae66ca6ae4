"""Fixtures for the end-to-end tests: one OP and one backend for the whole run, and Envoys
with the filter started per test module (or per test, for special configurations)."""

import os
import tempfile

import pytest

import stack


class Gateways:
    """Gateway ports fixed up front, because the OP registers each one's redirect URI."""

    def __init__(self, count=4):
        self.ports = [stack.free_port() for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]


@pytest.fixture(scope="session")
def logdir():
    d = os.environ.get("ENVOY_WAM_LOGDIR") or tempfile.mkdtemp(prefix="envoy-wam-logs-")
    os.makedirs(d, exist_ok=True)
    return d


# The builds every end-to-end test runs against: ENVOY_WAM_BUILDS="wasm,native" runs each
# test once per build (ids end in [wasm] / [native]); the default is the wasm build alone.
BUILDS = [b.strip() for b in os.environ.get("ENVOY_WAM_BUILDS", "wasm").split(",") if b.strip()]


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "wasm_only(why): a feature the native build does not have yet; its [native] runs are "
        "deselected (not skipped), and the README lists the gap",
    )


def pytest_collection_modifyitems(config, items):
    keep, gone = [], []
    for item in items:
        native = getattr(item, "callspec", None) and item.callspec.params.get("built") == "native"
        (gone if native and item.get_closest_marker("wasm_only") else keep).append(item)
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = keep


@pytest.fixture(scope="session", params=BUILDS)
def built(request):
    """The filter built, as the build this parameter names: every gateway started from here
    on (the fixtures below, and tests' own envoy_bootstrap calls) uses it for "wam"."""
    stack.BUILD = request.param
    stack.build_wasm(native=request.param == "native")
    yield request.param


@pytest.fixture(scope="session")
def gateways():
    return Gateways()


@pytest.fixture(scope="session")
def op(gateways, logdir):
    p = stack.start_op(stack.free_port(), gateways.urls, logdir=logdir)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def backend(logdir):
    p = stack.start_backend(stack.free_port(), logdir=logdir)
    yield p
    p.stop()


@pytest.fixture
def start_gateway(built, op, backend, gateways, logdir):
    """Starts an Envoy with the filter on one of the registered gateway ports."""
    started = []

    def start(config=None, slot=1, concurrency=1, op_port=None, wait=True, clusters=None):
        """`clusters` adds Envoy clusters {name: port} (an STS, a dead port)."""
        port = gateways.ports[slot]
        cfg = config if config is not None else stack.wam_config(op.issuer)
        bootstrap = stack.envoy_bootstrap(port, stack.free_port(), "wam", cfg, backend.port, op_port or op.port, clusters=clusters)
        p = stack.start_envoy(port, bootstrap, concurrency=concurrency, logdir=logdir, name=f"envoy-{port}-{len(started)}", wait=wait)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def gateway(built, op, backend, gateways, logdir):
    """The default gateway: the filter with the default configuration, two workers."""
    port = gateways.ports[0]
    bootstrap = stack.envoy_bootstrap(port, stack.free_port(), "wam", stack.wam_config(op.issuer), backend.port, op.port)
    p = stack.start_envoy(port, bootstrap, concurrency=2, logdir=logdir, name="envoy-default")
    yield p
    p.stop()
