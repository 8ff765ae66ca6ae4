"""The echo backend's models of how Tomcat-style servlet containers, nginx and IIS resolve a
request path (integration/backend/echo.py), checked without Envoy: the attack suite trusts
them to say what a backend would have served."""

import importlib.util
import os

import pytest

_spec = importlib.util.spec_from_file_location("echo", os.path.join(os.path.dirname(__file__), "backend", "echo.py"))
echo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(echo)


@pytest.mark.parametrize(
    "path,servlet,nginx,iis",
    [
        ("/admin/", "/admin/", "/admin/", "/admin/"),
        ("/", "/", "/", "/"),
        ("/Admin/X", "/Admin/X", "/Admin/X", "/admin/x"),
        ("//admin/", "/admin/", "/admin/", "//admin/"),
        ("/%61dmin/", "/admin/", "/admin/", "/admin/"),
        ("/public/../admin/", "/admin/", "/admin/", "/admin/"),
        ("/public/%2e%2e/admin/", "/admin/", "/admin/", "/admin/"),
        # `;` parameters: servlet containers drop them per segment before decoding.
        ("/admin;x/", "/admin/", "/admin;x/", "/admin;x/"),
        ("/public/..;/admin/", "/admin/", "/public/..;/admin/", "/public/..;/admin/"),
        ("/public/%2e%2e;/admin/", "/admin/", "/public/..;/admin/", "/public/..;/admin/"),
        ("/public/.%2e;/admin/", "/admin/", "/public/..;/admin/", "/public/..;/admin/"),
        # Encoded slashes: refused by servlet containers, separators to nginx and IIS.
        ("/admin%2f", None, "/admin/", "/admin/"),
        ("/public%2f..%2fadmin/", None, "/admin/", "/admin/"),
        ("/admin%5c", None, "/admin\\", "/admin/"),
        ("/public\\..\\admin\\", None, "/public\\..\\admin\\", "/admin/"),
        # IIS trims trailing dots and spaces from names.
        ("/admin./", "/admin./", "/admin./", "/admin/"),
        ("/admin%20/", "/admin /", "/admin /", "/admin/"),
        ("/a/./b/.", "/a/b/", "/a/b/", "/a/b/"),
        # Climbing above the root, invalid escapes, NUL: refused everywhere.
        ("/..", None, None, None),
        ("/a/../../b", None, None, None),
        ("/%zz", None, None, None),
        ("/a%", None, None, None),
        ("/a%00b", None, None, None),
    ],
)
def test_models(path, servlet, nginx, iis):
    assert echo.resolve_servlet(path) == servlet
    assert echo.resolve_nginx(path) == nginx
    assert echo.resolve_iis(path) == iis


def test_non_utf8_is_refused_by_servlet_containers_only():
    assert echo.resolve_servlet("/%ff") is None
    assert echo.resolve_nginx("/%ff") == "/\ufffd"


def test_resolve_all_drops_the_query_and_the_scheme_and_authority():
    assert echo.resolve_all("/public/x?next=/admin/") == {"servlet": "/public/x", "nginx": "/public/x", "iis": "/public/x"}
    assert echo.resolve_all("http://other.example/admin")["nginx"] == "/admin"
