"""The demo's sample backend: answers every request with the request it received, as JSON,
so a person or a test can see exactly what the gateway passed on (identity headers, cookies,
the body: "body" as text, "body_bytes", "content_type"),
answering after `x-echo-delay` seconds when a request carries that header,
and how three kinds of origin server would resolve the path it received ("resolved").

usage: echo.py [PORT]   (or PORT in the environment; binds 127.0.0.1)
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# --- how three kinds of origin server would resolve the path ----------------------------------
#
# A gateway that decides on one reading of the path and a backend that serves another is the
# classic access-control bypass (/public/..;/admin/ is /public/..;/admin/ to a naive matcher and
# /admin/ to Tomcat). The echo answer reports, for the raw path the backend received, what three
# common servers would serve, so a test can check that all of them agree with the resource the
# gateway decided on. These are small models of each server's default behaviour, not the
# servers: None means "this server would refuse the request (400)".

_HEX = set(b"0123456789abcdefABCDEF")


def _percent_decode(raw):
    """Decodes %XX escapes once (bytes in, bytes out); None for an invalid escape (%zz, a
    trailing %), which all three servers answer with 400."""
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25:  # %
            pair = raw[i + 1 : i + 3]
            if len(pair) < 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                return None
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return bytes(out)


def _remove_dot_segments(segments):
    """Resolves `.` and `..` in a list of segments (the part after the leading `/`). None when
    `..` climbs above the root: Tomcat, nginx and IIS all refuse that with 400 rather than
    clamping it the way RFC 3986 does."""
    out = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")  # /a/. is /a/
        elif seg == "..":
            if not out:
                return None
            out.pop()
            if last:
                out.append("")  # /a/b/.. is /a/
        else:
            out.append(seg)
    return out


def _merge_slashes(segments):
    """// is / (empty segments dropped, except the last one: the trailing slash)."""
    return [s for s in segments[:-1] if s != ""] + segments[-1:]


def _join(segments):
    return "/" + "/".join(segments)


def _text(raw, strict):
    """Decoded bytes as text: servlet containers decode the URI as UTF-8 and refuse malformed
    input (strict: None); nginx and IIS pass the bytes on, shown here with U+FFFD."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None if strict else raw.decode("utf-8", errors="replace")


def _refuses_control(text):
    # A decoded NUL or control character: Tomcat and nginx answer 400, IIS refuses it too.
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def resolve_servlet(raw_path):
    """Tomcat / Jetty / Spring (servlet path): path parameters (`;...`) are removed from every
    segment *before* percent-decoding (so /..;/ is a `..` and /%2e%2e;/ is one too), then the
    path is decoded, dot segments are resolved and slashes merged (Tomcat's normalize()). An
    encoded `/` or `\\` (%2F, %5C) is refused by default (ALLOW_ENCODED_SLASH false), and so is
    a raw `\\` (ALLOW_BACKSLASH false)."""
    raw = raw_path.encode("latin-1")
    if b"\\" in raw:
        return None
    segments = [seg.split(b";", 1)[0] for seg in raw[1:].split(b"/")] if raw.startswith(b"/") else None
    if segments is None:
        return None
    decoded = []
    for seg in segments:
        d = _percent_decode(seg)
        if d is None or b"/" in d or b"\\" in d:
            return None
        t = _text(d, strict=True)
        if t is None or _refuses_control(t):
            return None
        decoded.append(t)
    decoded = _merge_slashes(decoded)
    resolved = _remove_dot_segments(decoded)
    return None if resolved is None else _join(_merge_slashes(resolved))


def resolve_nginx(raw_path):
    """nginx (ngx_http_parse_complex_uri): percent-decodes first, and a decoded `/` is a
    separator like any other (so %2F splits segments and %2e%2e is a `..`); merges slashes
    (merge_slashes on) and resolves dot segments. `;` is an ordinary character."""
    d = _percent_decode(raw_path.encode("latin-1"))
    if d is None or not d.startswith(b"/"):
        return None
    t = _text(d, strict=False)
    if _refuses_control(t):
        return None
    resolved = _remove_dot_segments(_merge_slashes(t[1:].split("/")))
    return None if resolved is None else _join(_merge_slashes(resolved))


def resolve_iis(raw_path):
    """IIS / ASP.NET on Windows: percent-decodes, reads `\\` as `/`, and the file system trims
    trailing dots and spaces from every name (so /admin./ and /admin%20/ are /admin/); dot
    segments are resolved. Windows paths are case-insensitive: reported lowercased."""
    d = _percent_decode(raw_path.encode("latin-1"))
    if d is None:
        return None
    t = _text(d, strict=False).replace("\\", "/")
    if not t.startswith("/") or _refuses_control(t):
        return None
    segments = []
    for seg in t[1:].split("/"):
        # `.` and `..` are dot segments; any other name loses its trailing dots and spaces.
        segments.append(seg if seg in (".", "..") else seg.rstrip(". "))
    resolved = _remove_dot_segments(segments)
    return None if resolved is None else _join(resolved).lower()


def resolve_all(raw_target):
    """The three readings of a request target (its query removed; an absolute-form target is
    reduced to its path)."""
    path = raw_target
    if not path.startswith("/"):
        rest = path.split("://", 1)[1] if "://" in path else path
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    return {"servlet": resolve_servlet(path), "nginx": resolve_nginx(path), "iis": resolve_iis(path)}



class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # peer's delayed ACK (40 ms) on every keep-alive request.
    disable_nagle_algorithm = True

    def read_body(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self):
        raw = self.read_body()
        # A slow backend on request (tests of requests in flight): `x-echo-delay: <seconds>`.
        try:
            delay = min(float(self.headers.get("x-echo-delay") or 0), 30.0)
        except ValueError:
            delay = 0.0
        if delay > 0:
            time.sleep(delay)
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            if name in headers:
                prev = headers[name]
                headers[name] = (prev if isinstance(prev, list) else [prev]) + [value]
            else:
                headers[name] = value
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "resolved": resolve_all(self.path),
                # The body as received: text (undecodable bytes as U+FFFD), its length in bytes
                # and its declared type, so a test can see what a request carried through.
                "body": raw.decode("utf-8", errors="replace"),
                "body_bytes": len(raw),
                "content_type": self.headers.get("content-type"),
            },
            indent=2,
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8081"))
    host = os.environ.get("HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, port), Echo)
    print(f"backend ready on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
