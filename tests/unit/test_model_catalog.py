"""Where models may come from, checked at build time: the model catalog (web/models.json) and the deploy's model
origins (build_site.py --model-origin), and the one policy text build/serve.py sends and index.html carries.

The catalog's own files are checked against the bytes in ./models with hashlib; its other entries state a
size and sha256 only where we checked them (null otherwise) and are Hugging Face resolve/main URLs.
"""
from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit

import pytest

from e2e_helpers import REPO, load_build_module

catalog_module = load_build_module("model_catalog")
serve = load_build_module("serve")
CatalogError = catalog_module.CatalogError
MODELS = REPO / "models"
CATALOG = json.loads((REPO / "web" / "models.json").read_text())


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def test_the_shipped_catalog_validates():
    assert catalog_module.load_catalog(REPO / "web" / "models.json", MODELS) == CATALOG
    assert len(CATALOG["models"]) >= 4


@pytest.mark.parametrize("entry", [e for e in CATALOG["models"] if e["url"].startswith("models/")],
                         ids=lambda e: e["url"])
def test_the_sites_own_entries_state_their_files_size_and_sha256(entry):
    path = MODELS / entry["url"].split("/", 1)[1]
    assert (entry["size"], entry["sha256"]) == (path.stat().st_size, sha256(path))


def test_the_other_entries_are_hugging_face_resolve_urls_with_a_licence():
    remote = [e for e in CATALOG["models"] if not e["url"].startswith("models/")]
    assert remote
    for entry in remote:
        parts = urlsplit(entry["url"])
        assert (parts.scheme, parts.netloc) == ("https", "huggingface.co"), entry
        assert parts.path.count("/") == 5 and "/resolve/main/" in parts.path, entry
        assert entry["licence"] in ("Apache-2.0", "Gemma Terms of Use"), entry
        # Not checked against the files here (no network): stated as unknown, so the page says "not verified".
        assert entry["sha256"] is None and entry["size"] is None, entry


GOOD = {"name": "A", "url": "https://huggingface.co/o/r/resolve/main/a.gguf", "size": None, "sha256": None,
        "licence": "MIT", "about": "a model"}


@pytest.mark.parametrize("change, message", [
    ({"size": 0}, r"models\[0\]: size must be a number of bytes > 0"),
    ({"size": "12"}, r"models\[0\]: size must be an integer or null, not '12'"),
    ({"sha256": "ABC"}, r"models\[0\]: sha256 must be 64 lowercase hex digits"),
    ({"licence": ""}, r"models\[0\]: licence must be a non-empty string"),
    ({"url": "https://huggingface.co/o/r/resolve/main/a.bin"}, r"a\.bin is no \.gguf file"),
    ({"url": "http://example.com/a.gguf"}, r"is on no host a model can come from: .*plain http is allowed for "
                                           r"loopback hosts only"),
    ({"url": "a.gguf"}, r"neither the site's own file \(models/\.\.\.\) nor an absolute URL"),
    ({"url": "models/../secret.gguf"}, r"must name a file directly in models/"),
    ({"url": "models/SmolLM2-135M-Instruct.Q4_1.gguf"}, r"the site's own SmolLM2-135M-Instruct.Q4_1.gguf must "
                                                       r"state its size and sha256"),
    ({"url": "models/absent.gguf", "size": 1, "sha256": "0" * 64}, r"models/absent.gguf is missing: run scripts/setup.sh"),
    ({"url": "models/SmolLM2-135M-Instruct.Q4_1.gguf", "size": 1, "sha256": "0" * 64}, r"has 98362432 bytes, the "
                                                                                       r"catalog says 1"),
    ({"extra": 1}, r"models\[0\]: expected the fields \['about', 'licence', 'name', 'sha256', 'size', 'url'\]"),
])
def test_a_bad_catalog_entry_stops_the_build_with_what_is_wrong(tmp_path, change, message):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{**GOOD, **change}]}))
    with pytest.raises(CatalogError, match=message) as raised:
        catalog_module.load_catalog(path, MODELS)
    assert str(raised.value).startswith("%s: models[0]: " % path)


def test_a_catalog_that_is_no_list_or_repeats_a_url_is_refused(tmp_path):
    path = tmp_path / "models.json"
    path.write_text("[]")
    with pytest.raises(CatalogError, match=r'expected \{"models": \[\.\.\.\]\}'):
        catalog_module.load_catalog(path, MODELS)
    path.write_text(json.dumps({"models": [GOOD, GOOD]}))
    with pytest.raises(CatalogError, match=r"models\[1\] repeats the url"):
        catalog_module.load_catalog(path, MODELS)
    path.write_text("{")
    with pytest.raises(CatalogError, match="not a readable JSON file"):
        catalog_module.load_catalog(path, MODELS)


@pytest.mark.parametrize("given, origin", [
    ("https://huggingface.co", "https://huggingface.co"), ("HTTPS://HuggingFace.CO/", "https://huggingface.co"),
    ("https://*.hf.co", "https://*.hf.co"), ("https://models.example:443", "https://models.example"),
    ("https://models.example:8443", "https://models.example:8443"), ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
    ("http://localhost", "http://localhost"),
])
def test_model_origins_are_normalized(given, origin):
    assert catalog_module.model_origin(given) == origin


@pytest.mark.parametrize("given, why", [
    ("https://huggingface.co/org", "without a path"), ("huggingface.co", "an origin is a scheme and a host"),
    ("*", "an origin is a scheme and a host"), ("ftp://files.example", "only http"),
    ("http://huggingface.co", "a model host needs https"), ("https://user@host.example", "is no host name"),
    ("https://a b", "is no host name"), ("https://*", "is no host name"), ("https://host.example;", "is no host name"),
    ("https://host.example?x=1", "without a path, query or fragment"),
])
def test_a_bad_model_origin_stops_the_build_naming_the_flag(given, why):
    with pytest.raises(CatalogError, match="--model-origin") as raised:
        catalog_module.model_origin(given)
    assert why in str(raised.value)


def test_model_origins_keep_their_order_without_repeats():
    assert catalog_module.model_origins(["https://b.example", "https://a.example", "https://B.example/"]) == [
        "https://b.example", "https://a.example"]


def test_the_policy_adds_the_origins_to_connect_src_only():
    plain = dict(d.split(" ", 1) for d in serve.page_policy().split("; "))
    wide = dict(d.split(" ", 1) for d in serve.page_policy(["https://huggingface.co", "https://*.hf.co"]).split("; "))
    assert plain["connect-src"] == "'self'"
    assert wide.pop("connect-src") == "'self' https://huggingface.co https://*.hf.co"
    assert wide == {k: v for k, v in plain.items() if k != "connect-src"}
    assert serve.CONTENT_SECURITY_POLICY == serve.page_policy()


def test_the_server_sends_the_policy_of_the_site_it_serves(tmp_path):
    assert serve.site_model_origins(tmp_path) == ()  # no manifest: none
    (tmp_path / "manifest.json").write_text(json.dumps({"model_origins": ["http://127.0.0.1:9"]}))
    server = serve.make_server(tmp_path, 0)
    try:
        assert server.RequestHandlerClass.model_origins == ("http://127.0.0.1:9",)
    finally:
        server.server_close()
