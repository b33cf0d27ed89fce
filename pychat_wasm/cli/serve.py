"""`pychat-wasm serve [MODEL]`: OpenAI's HTTP API for one model (pychat_wasm/server/app.py says what it serves).

    pychat-wasm serve models/SmolLM2-135M-Instruct.Q4_1.gguf --port 8080
    curl http://127.0.0.1:8080/v1/chat/completions -H "Content-Type: application/json" \\
         -d '{"messages": [{"role": "user", "content": "Hi!"}]}'

It binds 127.0.0.1 unless --host says otherwise. The server needs the `server` extra (Starlette, uvicorn),
imported only when the command runs.
"""
from __future__ import annotations

import argparse
import sys

from .common import CLIError, add_lora_options, add_speculative_option, model_path
from ..model.config import DEFAULT_CONTEXT_CAP
from ..model.matrices import POLICIES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="serve a model over OpenAI's HTTP API",
                              description="Serve a GGUF model over OpenAI's HTTP API (/v1/chat/completions, "
                                          "/v1/completions, /v1/embeddings, /v1/models, /health).")
    p.add_argument("model", nargs="?", help="path to a .gguf file (default: $PYCHAT_WASM_MODEL or the "
                                            "installed SmolLM2-135M-Instruct)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    p.add_argument("--api-key", metavar="KEY", help="require Authorization: Bearer KEY on every request but /health")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages from this origin call the server (repeatable; default: none)")
    p.add_argument("--queue", type=int, default=8, metavar="N",
                   help="requests that may wait for the model; more get 503 (default %(default)s)")
    p.add_argument("--context", type=int, metavar="N",
                   help="context length in tokens (default: the model's, at most %d)" % DEFAULT_CONTEXT_CAP)
    p.add_argument("--policy", choices=("auto",) + POLICIES, default="auto",
                   help="how weights are kept in memory (default %(default)s)")
    add_lora_options(p)
    add_speculative_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server.app import build_app
    except ImportError as exc:
        raise CLIError("the server needs the 'server' extra (%s): pip install 'pychat-wasm[server]'" % exc) from None
    if args.queue < 0:
        raise CLIError("--queue must be 0 or more, not %d" % args.queue)
    from ..api import LLM

    llm = LLM(model_path(args.model), context_length=args.context, policy=args.policy, lora=args.lora,
              speculative=args.speculative)
    app = build_app(llm, api_key=args.api_key, cors_origins=args.cors_origin, queue_limit=args.queue)
    print("serving %s on http://%s:%d (context %d tokens)" % (llm.model_name, args.host, args.port, llm.n_ctx()),
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
