"""build/serve.py answers every Range header as RFC 9110 (14.2, 15.5.17) says, on a real socket.

A single satisfiable byte range gets 206 with its bytes; a range that starts past the end (or asks for the
last 0 bytes) gets 416; anything else (malformed, reversed, several ranges, another unit) is ignored: 200 with
the whole file. Numbers of any length are read without int() limits (Python refuses over 4,300 digits).
"""
from __future__ import annotations

import threading

import pytest

from e2e_helpers import http_get, load_build_module

BODY = bytes(range(256)) * 4  # 1,024 bytes
HUGE = "9" * 5000


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "file.bin").write_bytes(BODY)
    server = load_build_module("serve").make_server(site, 0)
    errors = []
    server.handle_error = lambda request, address: errors.append(address)  # a traceback would land here
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()
    assert errors == []


def get(port, range_header):
    return http_get(port, "/file.bin", {"Range": range_header})


@pytest.mark.parametrize("range_header, start, stop", [
    ("bytes=100-199", 100, 200),
    ("bytes=1000-", 1000, 1024),
    ("bytes=-24", 1000, 1024),
    ("bytes=0-" + HUGE, 0, 1024),  # a last position past the end is cut to the end
    ("bytes=-" + HUGE, 0, 1024),  # a suffix longer than the file is the whole file
    ("bytes=" + "0" * 5000 + "5-" + "0" * 5000 + "9", 5, 10),  # leading zeros do not make a number large
    ("BYTES=3-4", 3, 5),  # the range unit is case-insensitive
])
def test_a_satisfiable_range_gets_206_with_its_bytes(port, range_header, start, stop):
    response, body = get(port, range_header)
    assert response.status == 206
    assert response.getheader("Content-Range") == "bytes %d-%d/1024" % (start, stop - 1)
    assert body == BODY[start:stop]


@pytest.mark.parametrize("range_header", ["bytes=1024-", "bytes=" + HUGE + "-", "bytes=" + HUGE + "-" + HUGE,
                                          "bytes=-0"])
def test_an_unsatisfiable_range_gets_416(port, range_header):
    response, body = get(port, range_header)
    assert response.status == 416
    assert response.getheader("Content-Range") == "bytes */1024" and body == b""


@pytest.mark.parametrize("range_header", [
    "bytes=9-5",  # last before first: invalid
    "bytes=" + HUGE + "8-" + HUGE,  # the same, with numbers too long for int()
    "bytes=0-1,5-6", "bytes=0-1, 2-3",  # several ranges: we may (and do) ignore them
    "bytes=abc", "bytes=-", "bytes=--5", "bytes=1-2-3", "items=0-5", "bytes 0-5", "",
])
def test_a_range_to_ignore_gets_the_whole_file(port, range_header):
    response, body = get(port, range_header)
    assert response.status == 200
    assert response.getheader("Content-Range") is None and body == BODY
