"""Command line: `pychat-wasm info|tokenize|detokenize|chat|serve|train|finetune`.

    pychat-wasm info model.gguf [--context N] [--memory-limit BYTES]   (with the fit check: fit_check.py)
    pychat-wasm tokenize model.gguf "Hello world"      -> [19556, 905]
    pychat-wasm detokenize model.gguf "[19556, 905]"   -> Hello world
    pychat-wasm chat [model.gguf] [--prompt TEXT] [--json | --json-schema FILE | --grammar FILE]
    pychat-wasm serve [model.gguf] [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--cors-origin ORIGIN]
    pychat-wasm train --out my.gguf [--preset tiny|small] ...
    pychat-wasm finetune [base.gguf] --data chats.jsonl --out tuned.gguf

Errors go to stderr as one line and exit with code 1, never with a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from .. import __version__
from . import chat as cli_chat
from . import finetune as cli_finetune
from . import serve as cli_serve
from . import train as cli_train
from .common import CLIError, fail, model_path
from ..errors import PychatError
from ..model.fit_check import MODEL_HEAP, fit_check, format_fit_table
from ..gguf.reader import GGUFFile
from ..model.info import model_info
from ..tokenizers import load_tokenizer


def _print_info(info: Dict[str, Any]) -> None:
    rows = [
        ("name", info["name"]), ("architecture", info["architecture"]), ("GGUF version", info["gguf_version"]),
        ("file size", "%s bytes (%.1f MB)" % (info["file_bytes"], info["file_bytes"] / 1e6)),
        ("parameters", "{:,}".format(info["parameters"])),
        ("tensors", "%d, %s bits per weight" % (info["tensor_count"], info["bits_per_weight"])),
        ("tensor types", ", ".join("%s × %d" % kv for kv in sorted(info["tensor_types"].items()))),
        ("tokenizer", "%s (pre: %s), %s tokens" % (info["tokenizer"], info["pre_tokenizer"], info["vocab_size"])),
        ("chat template", "yes" if info["chat_template"] else "no (a built-in one is used)"),
    ]
    rows += [("  " + k, "%g" % v if isinstance(v, float) else v) for k, v in info["hyperparameters"].items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print("%s  %s" % (key.ljust(width), value))


def cmd_info(args: argparse.Namespace) -> int:
    gguf = GGUFFile.open(str(model_path(args.model)))
    info = model_info(gguf)
    fit = fit_check(gguf, args.context, args.memory_limit)
    if args.json:
        print(json.dumps(dict(info, fit=fit), indent=2))
    else:
        _print_info(info)
        print("\n".join(format_fit_table(fit)))
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.file is None):
        raise CLIError("give the text either as an argument or with --file PATH")
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise CLIError("cannot read %s: %s" % (args.file, exc.strerror)) from None
    else:
        text = args.text
    tokenizer = load_tokenizer(GGUFFile.open(str(model_path(args.model))))
    ids = tokenizer.encode(text, add_special=not args.no_bos, parse_special=not args.no_special)
    print(json.dumps(ids))
    return 0


def _parse_ids(text: str, vocab_size: int) -> List[int]:
    try:
        ids = json.loads(text)
    except ValueError:
        raise CLIError("IDS must be a JSON list of integers, e.g. \"[1, 2, 3]\"") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise CLIError("IDS must be a JSON list of integers, e.g. \"[1, 2, 3]\"")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise CLIError("token id %d is outside the vocabulary (0..%d)" % (bad[0], vocab_size - 1))
    return ids


def cmd_detokenize(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(GGUFFile.open(str(model_path(args.model))))
    sys.stdout.write(tokenizer.decode(_parse_ids(args.ids, tokenizer.vocab_size)) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pychat-wasm", description="Chat with GGUF models in pure Python + numpy.")
    parser.add_argument("--version", action="version", version="pychat-wasm " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="describe a GGUF model file")
    p.add_argument("model", nargs="?", help="path to a .gguf file (default: the installed SmolLM2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--context", type=int, help="context length for the fit check (default: min(trained, 4096))")
    p.add_argument("--memory-limit", type=int, default=MODEL_HEAP,
                   help="bytes the fit check measures against (default: the browser's 4 GiB heap less the 256 MiB Python keeps)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tokenize", help="print the token ids of a text as a JSON list")
    p.add_argument("model", help="path to a .gguf file")
    p.add_argument("text", nargs="?", help="the text (or use --file)")
    p.add_argument("--file", help="read the text from this file (UTF-8)")
    p.add_argument("--no-special", action="store_true", help="treat special-token texts as plain text")
    p.add_argument("--no-bos", action="store_true", help="do not add BOS/EOS even if the model asks for them")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("detokenize", help="turn a JSON list of token ids back into text")
    p.add_argument("model", help="path to a .gguf file")
    p.add_argument("ids", help='a JSON list such as "[1, 2, 3]"')
    p.set_defaults(func=cmd_detokenize)

    cli_chat.add_parser(sub)
    cli_serve.add_parser(sub)
    cli_train.add_parser(sub)
    cli_finetune.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PychatError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail("%s: %s" % (getattr(exc, "filename", None) or "I/O error", exc.strerror or exc))
    except MemoryError:
        return fail("out of memory: try a smaller model or --policy quantized")
    except KeyboardInterrupt:
        return 130

