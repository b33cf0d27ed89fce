"""Serve the built site (dist/site/) on 127.0.0.1, with HTTP Range requests and the right MIME types.

Range support is what lets an interrupted model download resume where it stopped instead of starting
over; every file carries an ETag and Last-Modified, and a Range request with an If-Range that no longer
matches gets the whole (changed) file, so a resumed download never splices two versions. `.wasm` must come
as `application/wasm` for streaming compilation. Any origin may read the files (CORS), so a notebook elsewhere
installs the engine's wheel from here (docs/browser.md).

    $ python build/serve.py                 # http://127.0.0.1:8000/
    $ python build/serve.py --port 0        # any free port; the URL is printed
"""
from __future__ import annotations

import argparse
import email.utils
import http.server
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "dist" / "site"

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",  # the PWA manifest (web/manifest.webmanifest)
    ".wasm": "application/wasm",
    ".data": "application/octet-stream",
    ".whl": "application/zip",
    ".gguf": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
# Only our own files run: no inline script, style or handler, nothing from or to another origin but the model
# hosts a deploy lists (build_site.py --model-origin, kept in the site's manifest.json "model_origins"): the page
# may fetch models from those, nothing else. Pyodide needs 'wasm-unsafe-eval' to compile its WebAssembly, nothing
# more. build_site.py writes the same policy (page_policy, the one owner of its text) into index.html's <meta> tag
# for hosts that cannot set headers; the header also covers the workers, the service worker and every response
# the service worker caches, and adds frame-ancestors, which a <meta> policy cannot carry.
POLICY_DIRECTIVES = (("default-src", "'self'"), ("script-src", "'self' 'wasm-unsafe-eval'"), ("style-src", "'self'"),
                     ("img-src", "'self'"), ("connect-src", "'self'"), ("worker-src", "'self'"),
                     ("object-src", "'none'"), ("base-uri", "'none'"), ("form-action", "'none'"))


def page_policy(model_origins: Sequence[str] = ()) -> str:
    """The site's Content-Security-Policy: connect-src adds the model origins (already checked by build_site).

    >>> page_policy(["https://huggingface.co"]).split("; ")[4]
    "connect-src 'self' https://huggingface.co"
    """
    return "; ".join("%s %s" % (name, " ".join([value, *model_origins]) if name == "connect-src" else value)
                     for name, value in POLICY_DIRECTIVES)


CONTENT_SECURITY_POLICY = page_policy()  # a site built without --model-origin
CSP_HEADER_ONLY = "; frame-ancestors 'none'"
# Cross-origin isolation: the workers that split each token share a SharedArrayBuffer and wait with
# Atomics.wait (web/worker_pool.js), which a page gets only when isolated. Every file is our own, so nothing is
# blocked. A host that cannot send these gets them from the service worker (web/sw.js): from the second load on.
ISOLATION_HEADERS = (("Cross-Origin-Opener-Policy", "same-origin"), ("Cross-Origin-Embedder-Policy", "require-corp"),
                     ("Cross-Origin-Resource-Policy", "same-origin"))
# Any origin may read the files (all public; no request carries credentials), as on GitHub Pages: a notebook on
# another origin (JupyterLite) installs the engine's wheel and fetches a model with micropip / pyfetch (docs/browser.md).
CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.IGNORECASE)  # range units are case-insensitive
COPY_CHUNK = 1 << 20


def _number(digits: str, size: int) -> int:
    """A byte position of any length: numbers past the file (even of 5,000 digits) count as size + 1, so
    int() never meets a number longer than Python converts (4,300 digits)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(size)) else size + 1


def _order(digits: str) -> Tuple[int, str]:
    """A key that orders numbers written in digits, however long, without converting them."""
    digits = digits.lstrip("0") or "0"
    return len(digits), digits


def parse_range(header: Optional[str], size: int) -> Tuple[int, Tuple[int, int]]:
    """How to answer a `Range` header (RFC 9110 14.2): (status, (start, stop) of the bytes to send).

    200 with the whole file when there is no header or it is to be ignored: not one valid byte range
    (malformed, reversed, another unit) or several ranges (we send no multipart answers). 206 with the
    span of a satisfiable range; 416 when the one range starts past the end (or asks for the last 0 bytes).

    >>> parse_range("bytes=10-", 100), parse_range("bytes=-10", 100), parse_range("bytes=5-9", 100)
    ((206, (10, 100)), (206, (90, 100)), (206, (5, 10)))
    >>> parse_range("bytes=100-", 100), parse_range("bytes=9-5", 100), parse_range("bytes=0-1,5-6", 100)
    ((416, (0, 0)), (200, (0, 100)), (200, (0, 100)))
    """
    match = _RANGE.match(header.strip()) if header else None
    if not match or match.group(1) == match.group(2) == "":
        return 200, (0, size)
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        length = _number(last, size)
        return (206, (max(0, size - length), size)) if length > 0 and size > 0 else (416, (0, 0))
    if last and _order(last) < _order(first):
        return 200, (0, size)  # last before first: an invalid range, ignored
    start = _number(first, size)
    stop = min(size, _number(last, size) + 1) if last else size
    if start >= size:
        return 416, (0, 0)
    return 206, (start, stop)


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single Range requests (206 / 416, or 200 when ignored) and `no-cache` so updates are
    always seen."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            self.send_error(404, "File not found")
            return None
        stat = path.stat()
        size = stat.st_size
        etag = '"%x-%x"' % (stat.st_mtime_ns, size)
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        range_header = self.headers.get("Range")
        if self.headers.get("If-Range") not in (None, etag, last_modified):
            range_header = None  # the file changed since the client's copy began: send all of it
        status, span = parse_range(range_header, size)
        if status == 416:
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (span[0], span[1] - 1, size))
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(span[1] - span[0]))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.send_header("Cache-Control", "no-cache")
        policy = self.content_security_policy(path.name)
        if policy:
            self.send_header("Content-Security-Policy", policy)
        for name, value in (*self.isolation_headers(), *CORS_HEADERS):
            self.send_header(name, value)
        self.end_headers()
        fh = open(path, "rb")
        fh.seek(span[0])
        self.span_length = span[1] - span[0]
        return fh

    model_origins: Sequence[str] = ()  # the site's, from its manifest.json (make_server)

    def content_security_policy(self, name: str) -> Optional[str]:
        """The policy the file `name` is served with (a subclass serving other pages may return None)."""
        return page_policy(self.model_origins) + CSP_HEADER_ONLY

    def isolation_headers(self):
        """COOP / COEP / CORP (a subclass playing a host that sends none returns ())."""
        return ISOLATION_HEADERS

    def copyfile(self, source, outputfile):
        """Send exactly the requested span (the base class would send the file to its end)."""
        remaining = self.span_length
        while remaining > 0:
            chunk = source.read(min(COPY_CHUNK, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        if os.environ.get("PYCHAT_SERVE_QUIET") != "1":
            super().log_message(format, *args)


def site_model_origins(site: Path) -> Sequence[str]:
    """The model origins the site was built to allow (manifest.json "model_origins"; none without a manifest)."""
    manifest = site / "manifest.json"
    return tuple(json.loads(manifest.read_text()).get("model_origins", ())) if manifest.exists() else ()


def make_server(site: Path = SITE, port: int = 8000, handler=SiteHandler) -> http.server.ThreadingHTTPServer:
    """A threading server for `site` on 127.0.0.1:`port` (0 = any free port); call serve_forever()."""

    class BoundHandler(handler):
        model_origins = site_model_origins(site)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), BoundHandler)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--site", type=Path, default=SITE)
    args = parser.parse_args(argv)
    if not (args.site / "index.html").exists():
        raise SystemExit("%s has no index.html: run `python build/build_site.py` first" % args.site)
    try:
        server = make_server(args.site, args.port)
    except OSError as exc:
        raise SystemExit("cannot listen on 127.0.0.1:%d (%s): pass --port N, or --port 0 for any free port"
                         % (args.port, exc.strerror))
    print("pychat-wasm is served at http://127.0.0.1:%d/  (Ctrl+C stops)" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
