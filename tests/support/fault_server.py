"""A hostile model server of our own for the browser tests: the built site on 127.0.0.1, plus model files
that misbehave on purpose, one planned fault per request.

    server = FaultServer(site)                          # the site, as build/serve.py serves it, plus ...
    server.add_model("/faulty/a.gguf", data)            # ... model files served here (`headers`: sent besides)
    server.plan("/faulty/a.gguf", Fault(drop_after=40_000), Fault(status=503), Fault(ignore_range=True))
    # the page downloads; each request takes the next planned fault; with none left it is served correctly
    server.requests("/faulty/a.gguf")                   # [{"range", "if_range", "status", "sent"}, ...]
    server.header_reads("/faulty/a.gguf")               # the fit check's reads of the first bytes, apart

The faults are the download's: a fit check's read of the header (`Range: bytes=0-N`, web/fit_check.js) takes
none and is logged on its own, so each test plans and checks its download as if no header were read.

Served correctly means RFC 9110: `Range: bytes=N-` gets 206 with Content-Range, a Range with a stale If-Range
(neither the current ETag nor Last-Modified) gets 200 with the whole current file, a start past the end 416.
The faults: a connection dropped after N body bytes, a stall of T seconds after N bytes, a bare HTTP status,
a Range ignored (200, whole file), a stale If-Range ignored (206 of the new file), a Content-Length off by
some bytes, and the file replaced by other bytes (new ETag and Last-Modified) after the response.
"""
from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Deque, Dict, List, NamedTuple, Optional
from urllib.parse import urlsplit

from e2e_helpers import SiteServer, is_header_read, load_build_module, serve

DROP_PAUSE_SECONDS = 0.3  # between the last byte and a dropped connection: the page has read what was sent


@dataclasses.dataclass
class Fault:
    drop_after: Optional[int] = None      # send this many body bytes, then close the connection
    stall_after: Optional[int] = None     # send this many body bytes, then wait ...
    stall_seconds: float = 0.0            # ... this long, or until `resume` is set, then send the rest
    resume: Optional[threading.Event] = None
    status: Optional[int] = None          # answer with this status and an empty body
    ignore_range: bool = False            # answer a Range request with 200 and the whole file
    ignore_if_range: bool = False         # answer a stale If-Range with 206 all the same
    length_error: int = 0                 # Content-Length claims this many bytes more (or fewer) than sent
    replace_with: Optional[bytes] = None  # after this response the file is these bytes


class ModelFile:
    """The bytes behind one URL, their validators, the planned faults and the log of requests."""

    def __init__(self, data: bytes, etag: bool = True, header_status: Optional[int] = None,
                 headers: Optional[Dict[str, str]] = None):
        self.with_etag = etag
        self.header_status = header_status  # the answer to every header read: the fit check cannot read it
        self.headers = headers or {}        # sent with every answer of the file (e.g. X-Linked-Etag)
        self.modified = time.time() - 3600
        self.faults: Deque[Fault] = deque()
        self.log: List[Dict] = []
        self.header_log: List[Dict] = []
        self.replace(data)

    def replace(self, data: bytes) -> None:
        self.data = data
        self.modified += 60  # Last-Modified has a resolution of one second
        self.etag = '"%s"' % hashlib.sha256(data).hexdigest()[:16] if self.with_etag else None
        self.last_modified = email.utils.formatdate(self.modified, usegmt=True)


class FaultyHandler(serve.SiteHandler):
    """The product's handler for the site; the registered model paths are served by serve_model()."""

    def do_GET(self):
        model = self.server.models.get(urlsplit(self.path).path)
        if model is None:
            return super().do_GET()
        try:
            self.serve_model(model)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page gave up on a stalled connection
        self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def serve_model(self, model: ModelFile) -> None:
        entry = {"range": self.headers.get("Range"), "if_range": self.headers.get("If-Range"), "sent": 0}
        header_read = is_header_read(entry)
        fault = model.faults.popleft() if model.faults and not header_read else Fault()
        if header_read and model.header_status:
            fault = Fault(status=model.header_status)
        (model.header_log if header_read else model.log).append(entry)
        data = model.data
        if fault.status:
            entry["status"] = fault.status
            self.send_response(fault.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        span = None
        stale = self.headers.get("If-Range") not in (None, model.etag, model.last_modified)
        if entry["range"] and not fault.ignore_range and (fault.ignore_if_range or not stale):
            status, span = serve.parse_range(entry["range"], len(data))
            span = span if status == 206 else None
            if status == 416:
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        start, stop = span or (0, len(data))
        entry["status"] = 206 if span else 200
        self.send_response(entry["status"])
        if span:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, stop - 1, len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(stop - start + fault.length_error))
        self.send_header("Accept-Ranges", "bytes")
        if model.etag:
            self.send_header("ETag", model.etag)
        self.send_header("Last-Modified", model.last_modified)
        for name, value in model.headers.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.send_body(model, fault, entry, data[start:stop])

    def send_body(self, model: ModelFile, fault: Fault, entry: Dict, body: bytes) -> None:
        end = len(body) if fault.drop_after is None else min(fault.drop_after, len(body))
        pause = fault.stall_after if fault.stall_after is not None and fault.stall_after < end else end
        try:
            self.wfile.write(body[:pause])
            self.wfile.flush()
            entry["sent"] = pause
            if pause < end:
                entry["stalled"] = True
                if fault.resume is not None:
                    fault.resume.wait(fault.stall_seconds)
                else:
                    time.sleep(fault.stall_seconds)
                self.wfile.write(body[pause:end])
                self.wfile.flush()
                entry["sent"] = end
        finally:
            if fault.replace_with is not None:
                model.replace(fault.replace_with)
        if fault.drop_after is not None:
            time.sleep(DROP_PAUSE_SECONDS)


class FaultServer(SiteServer):
    """The built site on 127.0.0.1 with model files served by FaultyHandler."""

    def __init__(self, site, handler=FaultyHandler):
        self.models: Dict[str, ModelFile] = {}
        super().__init__(site, handler=handler)

    def start(self) -> None:
        super().start()
        self.httpd.models = self.models

    def add_model(self, path: str, data: bytes, etag: bool = True, header_status: Optional[int] = None,
                  headers: Optional[Dict[str, str]] = None) -> str:
        """Serve `data` at `path` (faults come from plan(); header reads get `header_status` if given; `headers`
        go with every answer); returns its URL."""
        self.models[path] = ModelFile(data, etag=etag, header_status=header_status, headers=headers)
        return self.url.rstrip("/") + path

    def plan(self, path: str, *faults: Fault) -> None:
        self.models[path].faults.extend(faults)

    def requests(self, path: str) -> List[Dict]:
        return self.models[path].log

    def header_reads(self, path: str) -> List[Dict]:
        return self.models[path].header_log


class FaultSite(NamedTuple):
    """A built site whose default model is a tiny one: where it is, its URL path and its true bytes."""

    site: Path
    model_path: str
    model_bytes: bytes

    @property
    def model_id(self) -> str:  # the id the page stores it under
        return "default/" + self.model_path.rsplit("/", 1)[1]


def build_fault_site(directory: Path, payload: str, padding: int, download: Dict, **build) -> FaultSite:
    """The site built with a tiny model (answering `payload`, `padding` bytes bigger) as its default model,
    and manifest.json's download settings (stall time, retry delay) set to `download`; `build`: build_site's
    other options (model_origins, catalog)."""
    from tiny_models import write_tiny_gguf

    model = write_tiny_gguf(directory / "tiny-default.gguf", payload, padding=padding)
    site = directory / "site"
    manifest = load_build_module("build_site").build_site(site, model, **build)
    manifest["download"] = download
    (site / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return FaultSite(site, "/" + manifest["model"]["url"], model.read_bytes())


@contextlib.contextmanager
def serving(fault_site: FaultSite, handler=FaultyHandler):
    """A FaultServer for the site, its default model served (and faulted) by the handler, stopped afterwards."""
    server = FaultServer(fault_site.site, handler=handler)
    server.add_model(fault_site.model_path, fault_site.model_bytes)
    try:
        yield server
    finally:
        server.stop()
