"""The engine's wheel as a notebook installs it from the built site (no browser; tests/browser/test_notebook.py
runs the install in Pyodide): what it requires, the URL docs/browser.md gives, and the server letting another
origin read it.

The references: `packaging` (pip's own parser of requirements, markers and specifiers) and Pyodide 0.27.7's
pyodide-lock.json, the packages a Pyodide distribution serves to micropip.
"""
from __future__ import annotations

import http.client
import json
import zipfile

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from e2e_helpers import REPO

PYODIDE_LOCK = json.loads((REPO / "node_modules" / "pyodide" / "pyodide-lock.json").read_text())
DOCS = REPO / "docs" / "browser.md"


def pyodide_environment(extra: str = "") -> dict:
    """The PEP 508 marker environment of Pyodide 0.27.7, as micropip evaluates markers there."""
    python = PYODIDE_LOCK["info"]["python"]
    return {**default_environment(), "sys_platform": "emscripten", "platform_system": "Emscripten",
            "platform_machine": "wasm32", "implementation_name": "cpython", "platform_python_implementation":
            "CPython", "python_full_version": python, "python_version": ".".join(python.split(".")[:2]),
            "extra": extra}


@pytest.fixture(scope="module")
def engine_wheel(site):
    """(the engine wheel's URL in the site, its METADATA headers as (name, value) pairs)."""
    url = json.loads((site / "manifest.json").read_text())["boot"]["wheelURLs"][-1]
    with zipfile.ZipFile(site / url) as wheel:
        (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        head = wheel.read(metadata).decode().split("\n\n")[0]
    return url, [tuple(line.split(": ", 1)) for line in head.splitlines() if ": " in line]


def requirements(metadata, extra: str = ""):
    """The canonical names micropip installs for the wheel (with `extra`) in Pyodide."""
    reqs = [Requirement(value) for key, value in metadata if key == "Requires-Dist"]
    return {req.name.lower() for req in reqs if req.marker is None or req.marker.evaluate(pyodide_environment(extra))}


def test_the_wheel_requires_only_what_pyodide_serves(engine_wheel):
    _, metadata = engine_wheel
    assert requirements(metadata) == {"numpy", "jinja2"}
    for name in requirements(metadata) | {"markupsafe"}:  # MarkupSafe: Jinja2's one requirement
        assert name in PYODIDE_LOCK["packages"], name
    assert {"starlette", "uvicorn"} <= requirements(metadata, extra="server")  # only when asked for
    (requires_python,) = [value for key, value in metadata if key == "Requires-Python"]
    assert PYODIDE_LOCK["info"]["python"] in SpecifierSet(requires_python)


def test_the_wheel_url_is_a_wheel_name_of_its_version(engine_wheel):
    """micropip installs a URL whose file name parses as a wheel's (packaging's parser, which micropip vendors):
    the project, the version its metadata states and a tag any Python 3 takes."""
    url, metadata = engine_wheel
    name, version, build, tags = parse_wheel_filename(url.split("/")[-1])
    assert (name, version, build) == ("pychat-wasm", Version(dict(metadata)["Version"]), ())
    assert Tag("py3", "none", "any") in tags
    assert url == "wheels/pychat_wasm-%s-py3-none-any.whl" % version  # no hash or date: the same every build


def test_the_docs_give_the_urls_the_site_serves(engine_wheel, site):
    """docs/browser.md's notebook cell installs the wheel and fetches the default model at their site URLs."""
    url, _ = engine_wheel
    model = json.loads((site / "manifest.json").read_text())["model"]["url"]
    text = DOCS.read_text()
    assert 'micropip.install("https://<site>/%s")' % url in text
    assert 'pyfetch("https://<site>/%s")' % model in text


def test_any_origin_may_read_the_files(server, site, engine_wheel):
    """A notebook on another origin fetches the wheel and the model: CORS lets it read them."""
    url, _ = engine_wheel
    model = json.loads((site / "manifest.json").read_text())["model"]["url"]
    for path in (url, model, "manifest.json"):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("HEAD", "/" + path, headers={"Origin": "http://notebook.example"})
        response = connection.getresponse()
        connection.close()
        assert (response.status, response.getheader("Access-Control-Allow-Origin")) == (200, "*"), path
