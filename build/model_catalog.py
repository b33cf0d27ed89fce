"""Where the page may fetch models from: the deploy's model origins (build_site.py --model-origin) and the model
catalog (web/models.json), both checked at build time with a clear error.

A model origin is what a Content-Security-Policy source may name and web/model_origins.js matches the same
way: `scheme://host[:port]`, the host optionally `*.`-prefixed for every subdomain (`https://*.hf.co` covers
`cdn-lfs.hf.co` and `cas-bridge.xethub.hf.co`). https only, but for loopback hosts (the tests' model hosts).

    >>> model_origin("https://HuggingFace.co/"), model_origin("https://*.hf.co"), model_origin("https://a.b:443")
    ('https://huggingface.co', 'https://*.hf.co', 'https://a.b')

The catalog lists known small GGUF chat models, each {name, url, size, sha256, licence, about}: `url` is either
the site's own file (`models/<file>.gguf`, copied into the site from ./models; its size and sha256 must be
stated, and tests/unit/test_model_catalog.py checks them against the files) or an absolute https URL on
another host, whose size and sha256 may be null: not stated by us, because we could not check them offline.
The page then checks such a download against the sha256 its host states (web/host_checksum.js: Hugging Face's
LFS pointer or X-Linked-Etag), or says it is not verified: guarded by its size, once known, and the host's ETag.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Sequence
from urllib.parse import urlsplit

ENTRY_FIELDS = {"name": str, "url": str, "size": (int, type(None)), "sha256": (str, type(None)), "licence": str,
                "about": str}
LOCAL_PREFIX = "models/"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$|^\[::1\]$")
_DEFAULT_PORTS = {"https": "443", "http": "80"}


class CatalogError(SystemExit):
    """A bad --model-origin or web/models.json: the build stops with this message."""


def model_origin(text: str) -> str:
    """`text` as a normalized origin (lower case, no default port, no trailing slash), or CatalogError."""
    def bad(why: str) -> CatalogError:
        return CatalogError("--model-origin %r: %s (write it as https://host or https://*.host)" % (text, why))

    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://([^/?#]*)/?$", text.strip())
    if not match:
        raise bad("an origin is a scheme and a host, without a path, query or fragment")
    scheme, authority = match.group(1).lower(), match.group(2).lower()
    host, _, port = authority.rpartition(":") if re.search(r":\d+$", authority) else (authority, "", "")
    if scheme not in _DEFAULT_PORTS:
        raise bad("only http(s) models can be fetched")
    if "@" in authority or not _HOST.match(host):
        raise bad("%r is no host name" % host)
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise bad("plain http is allowed for loopback hosts only: a model host needs https")
    port = "" if port == _DEFAULT_PORTS[scheme] else port
    return "%s://%s%s" % (scheme, host, ":" + port if port else "")


def model_origins(values: Sequence[str]) -> List[str]:
    """The --model-origin values, normalized, without repeats, in the order given."""
    origins: List[str] = []
    for value in values:
        origin = model_origin(value)
        if origin not in origins:
            origins.append(origin)
    return origins


def load_catalog(path: Path, models_dir: Path) -> dict:
    """The catalog at `path`, checked: each entry has exactly ENTRY_FIELDS of their types, a unique url that is
    the site's own file (present in `models_dir` with the stated size) or an absolute http(s) URL of a .gguf
    file, a size > 0 or null and a lowercase hex sha256 or null (both stated for the site's own files)."""
    where = "%s" % path
    try:
        catalog = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError("%s: not a readable JSON file (%s)" % (where, exc))
    if not isinstance(catalog, dict) or not isinstance(catalog.get("models"), list):
        raise CatalogError('%s: expected {"models": [...]}' % where)
    seen = set()
    for index, entry in enumerate(catalog["models"]):
        check_entry(entry, "%s: models[%d]" % (where, index), models_dir)
        if entry["url"] in seen:
            raise CatalogError("%s: models[%d] repeats the url %s" % (where, index, entry["url"]))
        seen.add(entry["url"])
    return catalog


def check_entry(entry, where: str, models_dir: Path) -> None:
    if not isinstance(entry, dict) or set(entry) != set(ENTRY_FIELDS):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise CatalogError("%s: expected the fields %s, got %s" % (where, sorted(ENTRY_FIELDS), got))
    for field, kind in ENTRY_FIELDS.items():
        if not isinstance(entry[field], kind) or isinstance(entry[field], bool) or entry[field] == "":
            raise CatalogError("%s: %s must be %s, not %r" % (where, field, _kind_name(kind), entry[field]))
    if entry["size"] is not None and entry["size"] <= 0:
        raise CatalogError("%s: size must be a number of bytes > 0 (or null: not stated)" % where)
    if entry["sha256"] is not None and not re.match(r"^[0-9a-f]{64}$", entry["sha256"]):
        raise CatalogError("%s: sha256 must be 64 lowercase hex digits (or null: not stated)" % where)
    url = entry["url"]
    if not url.endswith(".gguf"):
        raise CatalogError("%s: %s is no .gguf file" % (where, url))
    if url.startswith(LOCAL_PREFIX):
        local_file(entry, where, models_dir)
    else:
        parts = urlsplit(url)
        if not (parts.scheme and parts.netloc):
            raise CatalogError("%s: %s is neither the site's own file (%s...) nor an absolute URL"
                               % (where, url, LOCAL_PREFIX))
        try:
            model_origin("%s://%s" % (parts.scheme, parts.netloc))  # an https host (or a loopback http one)
        except CatalogError as exc:
            raise CatalogError("%s: %s is on no host a model can come from: %s" % (where, url, exc))


def local_file(entry, where: str, models_dir: Path) -> Path:
    """The ./models file a site-relative entry names, present with the stated size (the unit test checks sha256)."""
    name = entry["url"][len(LOCAL_PREFIX):]
    if "/" in name or name.startswith("."):
        raise CatalogError("%s: %s must name a file directly in %s" % (where, entry["url"], LOCAL_PREFIX))
    if entry["size"] is None or entry["sha256"] is None:
        raise CatalogError("%s: the site's own %s must state its size and sha256" % (where, name))
    path = models_dir / name
    if not path.is_file():
        raise CatalogError("%s: %s is missing: run scripts/setup.sh (it installs the models)" % (where, path))
    if path.stat().st_size != entry["size"]:
        raise CatalogError("%s: %s has %d bytes, the catalog says %d" % (where, path, path.stat().st_size, entry["size"]))
    return path


def local_files(catalog: dict, models_dir: Path) -> List[Path]:
    """The ./models files of the catalog's site-relative entries (checked by load_catalog)."""
    return [models_dir / e["url"][len(LOCAL_PREFIX):] for e in catalog["models"] if e["url"].startswith(LOCAL_PREFIX)]


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a non-empty string", "int": "an integer", "NoneType": "null"}[k.__name__] for k in kinds)
