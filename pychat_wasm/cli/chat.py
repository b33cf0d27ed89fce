"""`pychat-wasm chat`: talk to a model in the terminal, or answer one prompt for scripts.

    pychat-wasm chat                                   # interactive, the installed SmolLM2
    pychat-wasm chat model.gguf --system "Be brief."   # interactive, another model
    pychat-wasm chat --prompt "What is 2+2?" --temperature 0    # one answer on stdout, greedy
    pychat-wasm chat --prompt "List three fruits." --stop "3."  # the answer ends before the first "3."
    pychat-wasm chat base.gguf --lora tuned.lora.gguf --lora-scale 0.5   # a LoRA adapter applied at load
    pychat-wasm chat --prompt "A cat as JSON." --json-schema cat.schema.json   # every answer valid JSON

Interactive mode has line editing and history (readline), the commands /help, /reset, /system, /context,
/exit, and prints prompt and generation speed and the context budget after every answer. Ctrl-C stops the
answer being written; Ctrl-C or Ctrl-D at the prompt ends the program. The terminal keeps its conversation
(`TerminalChat`) and sends it whole with every turn, as the page does, through the library API
(pychat_wasm.LLM's streamed create_chat_completion, truncation="auto": the oldest turns that do not fit are
dropped; the report chunk of stream_options.include_usage gives the speed and the context budget).
The CLI keeps its own sampling defaults (SamplingSettings') and passes them with every call.
--json, --json-schema FILE and --grammar FILE (GBNF, as llama.cpp's) constrain every answer; a file that
cannot constrain is refused before the model loads, with one line naming it (ConstraintFileError).
In one-shot mode only the answer goes to stdout; speed and notices go to stderr. A sampling option out of range
exits with status 2 (as argparse does for a malformed one) and the message the page shows for the same value:
both go through sampler.settings_from_mapping.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, TextIO

from .common import add_lora_options, add_speculative_option, fail, model_path
from ..api import LLM
from ..errors import ConstraintFileError, GrammarError, InvalidSettingsError, PychatError
from ..grammar import Grammar, schema_to_gbnf
from ..model.config import DEFAULT_CONTEXT_CAP
from ..chat.sampler import SamplingSettings, settings_from_mapping
from ..chat.stop_strings import MAX_STOP_STRINGS, stop_strings_from_values
from ..model.matrices import POLICIES

DEFAULTS = SamplingSettings()
USAGE_ERROR = 2  # the exit status argparse gives a malformed option; an out-of-range value is the same mistake
HELP = """commands:
  /help           this text
  /reset          start a new conversation (keeps the system prompt)
  /system TEXT    set a new system prompt and start a new conversation
  /context        tokens used of the context, and whether the next message will drop old turns
  /exit           quit (also /quit, Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while the model writes stops the answer."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `chat` and its options; the sampling defaults come from SamplingSettings."""
    p = subparsers.add_parser("chat", help="chat with a model (interactive, or one answer with --prompt)",
                              description="Chat with a GGUF model. Without --prompt it is interactive.")
    p.add_argument("model", nargs="?", help="path to a .gguf file (default: $PYCHAT_WASM_MODEL or the "
                                            "installed SmolLM2-135M-Instruct)")
    p.add_argument("--prompt", metavar="TEXT", help="answer this one message, print only the answer and exit")
    p.add_argument("--system", metavar="TEXT", help="system prompt (default: the chat template's own, if any)")
    p.add_argument("--temperature", type=float, metavar="T", default=DEFAULTS.temperature,
                   help="0 = greedy (the same answer every time); the repeat penalty still applies: "
                        "--repeat-penalty 1 turns it off; higher = more varied (default %(default)s)")
    p.add_argument("--top-k", type=int, metavar="K", default=DEFAULTS.top_k, help="0 = off (default %(default)s)")
    p.add_argument("--top-p", type=float, metavar="P", default=DEFAULTS.top_p, help="1 = off (default %(default)s)")
    p.add_argument("--min-p", type=float, metavar="P", default=DEFAULTS.min_p, help="0 = off (default %(default)s)")
    p.add_argument("--repeat-penalty", type=float, metavar="R", default=DEFAULTS.repeat_penalty,
                   help="1 = off (default %(default)s)")
    p.add_argument("--repeat-last-n", type=int, metavar="N", default=DEFAULTS.repeat_last_n,
                   help="tokens the penalty looks back on, 0 = off (default %(default)s)")
    p.add_argument("-n", "--max-tokens", type=int, metavar="N", default=DEFAULTS.max_tokens,
                   help="longest answer in tokens (default %(default)s)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed for reproducible answers (default: random)")
    p.add_argument("--stop", action="append", metavar="TEXT",
                   help="end the answer where this text appears, without it; repeatable, up to %d"
                        % MAX_STOP_STRINGS)
    p.add_argument("--context", type=int, metavar="N",
                   help="context length in tokens (default: the model's, at most %d)" % DEFAULT_CONTEXT_CAP)
    p.add_argument("--policy", choices=("auto",) + POLICIES, default="auto",
                   help="how weights are kept in memory: float32 is fastest, quantized smallest "
                        "(default %(default)s)")
    add_lora_options(p)
    add_speculative_option(p)
    constrain = p.add_mutually_exclusive_group()
    constrain.add_argument("--json", action="store_true", help="every answer is a JSON object")
    constrain.add_argument("--json-schema", metavar="FILE", help="every answer is JSON valid under this JSON Schema")
    constrain.add_argument("--grammar", metavar="FILE", help="every answer follows this GBNF grammar (llama.cpp's)")
    p.set_defaults(func=run)
    return p


def settings_from_args(args: argparse.Namespace) -> SamplingSettings:
    """The sampling options, checked by the code that checks the page's form (InvalidSettingsError)."""
    return settings_from_mapping(vars(args))  # the options are named as SamplingSettings' fields


def run(args: argparse.Namespace) -> int:
    """Load the model and chat; PychatError/OSError propagate to cli.main, which prints them without a traceback.
    The context length is checked where the page's is, in ModelConfig.from_gguf."""
    try:
        settings, stop_strings = settings_from_args(args), stop_strings_from_values(args.stop)
    except InvalidSettingsError as exc:
        fail(str(exc))
        return USAGE_ERROR
    options = dict(dataclasses.asdict(settings), stop=stop_strings, **answer_format(args))
    path = model_path(args.model)
    if args.prompt is None:
        print("loading %s ..." % path, file=sys.stderr)
    llm = LLM(path, policy=args.policy, context_length=args.context, lora=args.lora, speculative=args.speculative)
    chat = TerminalChat(llm, options, args.system)
    if args.prompt is not None:
        stream_answer(chat, args.prompt, sys.stdout, report=sys.stderr)
        return 0
    return interactive(chat)


def answer_format(args: argparse.Namespace) -> Dict[str, Any]:
    """The create_chat_completion arguments that constrain every answer (--json, --json-schema, --grammar),
    the file checked by the converter or parser the LLM uses, so a bad one fails before the model loads."""
    if args.json:
        return {"response_format": {"type": "json_object"}}
    if args.json_schema:
        text = _read(args.json_schema, "--json-schema")
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise ConstraintFileError("--json-schema %s is not JSON: %s" % (args.json_schema, exc)) from None
        if not isinstance(schema, dict):
            raise ConstraintFileError("--json-schema %s: a JSON schema is an object, not %s"
                                      % (args.json_schema, type(schema).__name__))
        _check(lambda: schema_to_gbnf(schema), "--json-schema", args.json_schema)
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": Path(args.json_schema).stem, "schema": schema, "strict": True}}}
    if args.grammar:
        text = _read(args.grammar, "--grammar")
        _check(lambda: Grammar.parse(text), "--grammar", args.grammar)
        return {"grammar": text}
    return {}


def _read(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ConstraintFileError("%s %s: cannot read it: %s" % (option, path, exc.strerror or exc)) from None
    except UnicodeDecodeError:
        raise ConstraintFileError("%s %s is not UTF-8 text" % (option, path)) from None


def _check(convert: Any, option: str, path: str) -> None:
    try:
        convert()
    except GrammarError as exc:
        raise ConstraintFileError("%s %s cannot constrain answers: %s" % (option, path, exc)) from None


class TerminalChat:
    """What the terminal keeps: its conversation (a first "system" message for the system prompt, then user
    and assistant messages), the create_chat_completion arguments of every answer, and the last answer's
    context budget."""

    def __init__(self, llm: LLM, options: Dict[str, Any], system_prompt: Optional[str] = None):
        self.llm, self.options = llm, options
        self.messages: List[Dict[str, str]] = []
        self.last_budget: Optional[Dict[str, Any]] = None
        self.start(system_prompt)

    def start(self, system_prompt: Optional[str]) -> None:
        """A new conversation with `system_prompt` (None: the template's default)."""
        self.messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.last_budget = None

    @property
    def system_prompt(self) -> Optional[str]:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    def budget(self) -> Dict[str, Any]:
        """The last answer's budget, or before any, that of the conversation as it stands."""
        return self.last_budget or self.llm.context_budget(self.messages, max_tokens=self.options["max_tokens"])


def stream_answer(chat: TerminalChat, text: str, out: TextIO, report: TextIO) -> str:
    """Answer `text` after the conversation: print the answer to `out` as it is generated, the speed and context
    lines to `report`; returns the finish reason. Only an answer that ends (an end token, a stop, max tokens,
    Ctrl-C) joins the conversation."""
    messages = chat.messages + [{"role": "user", "content": text}]
    chunks = chat.llm.create_chat_completion(messages, stream=True, stream_options={"include_usage": True},
                                             truncation="auto", **chat.options)
    pieces, reason, report_chunk = [], "", {}
    for chunk in chunks:
        if not chunk["choices"]:  # include_usage's last chunk: usage, timings, context_budget
            report_chunk = chunk
            continue
        choice = chunk["choices"][0]
        piece = choice["delta"].get("content")
        if piece:
            out.write(piece)
            out.flush()
            pieces.append(piece)
        reason = choice["finish_reason"] or reason
    out.write("\n")
    out.flush()
    chat.messages = messages + [{"role": "assistant", "content": "".join(pieces)}]
    chat.last_budget = report_chunk["context_budget"]
    stopped = " (stopped)" if reason == "cancelled" else ""
    print("[%s%s]" % (speed_line(report_chunk["timings"]), stopped), file=report, flush=True)
    print(context_status(chat.budget()), file=report, flush=True)
    return reason


def speed_line(timings: Dict[str, Any]) -> str:
    """'42 prompt tokens, 310.5 tok/s | 8 tokens, 35.1 tok/s' from llama.cpp-style timings: prompt tokens run
    (not those reused from the cache), tokens sampled (the end-of-turn token included)."""
    return "%d prompt tokens, %.1f tok/s | %d tokens, %.1f tok/s" % (
        timings["prompt_n"], timings["prompt_per_second"], timings["predicted_n"], timings["predicted_per_second"])


def context_status(budget: Dict[str, Any]) -> str:
    """'[context: 812/2048 tokens (system 31, history 700, answer 81)]', with what the trimming did or will do
    (`budget`: a chat response's context_budget)."""
    line = "[context: %d/%d tokens (system %d, history %d, answer %d)" % (
        budget["used"], budget["context"], budget["system"], budget["history"], budget["answer"])
    if budget["dropped"]:
        line += "; %d oldest message%s dropped" % (budget["dropped"], "s" if budget["dropped"] > 1 else "")
    if budget["used"] >= budget["context"]:
        line += "; the context is full: the answer was cut short"
    if budget["will_drop_next"]:
        line += "; the next message will drop the oldest turns"
    return line + "]"


@contextlib.contextmanager
def ctrl_c_cancels(llm: LLM) -> Iterator[None]:
    """While the model writes, Ctrl-C asks it to stop after the current token."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: llm.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interactive(chat: TerminalChat) -> int:
    try:
        import readline  # noqa: F401  (importing it gives input() line editing and history)
    except ImportError:
        pass
    print("chat with the model: /help for commands, Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if not run_command(chat, text):
                return 0
            continue
        try:
            with ctrl_c_cancels(chat.llm):
                stream_answer(chat, text, sys.stdout, report=sys.stdout)
        except PychatError as exc:  # e.g. a message longer than the context: say so and keep chatting
            print("error: %s" % exc, file=sys.stderr)


def run_command(chat: TerminalChat, text: str) -> bool:
    """Run a /command; False means quit."""
    name, _, rest = text.partition(" ")
    if name in ("/exit", "/quit"):
        return False
    if name == "/reset":
        chat.start(chat.system_prompt)
        print("[new conversation]")
    elif name == "/system":
        chat.start(rest.strip() or None)
        print("[new conversation with %s]" % ("that system prompt" if rest.strip() else "the default system prompt"))
    elif name == "/context":
        print(context_status(chat.budget()))
    elif name == "/help":
        print(HELP)
    else:
        print("unknown command %s: /help lists them" % name)
    return True
