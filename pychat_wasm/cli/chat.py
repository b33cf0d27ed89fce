"""`pychat-wasm chat`: talk to a model in the terminal, or answer one prompt for scripts.

    pychat-wasm chat                                   # interactive, the installed SmolLM2
    pychat-wasm chat model.gguf --system "Be brief."   # interactive, another model
    pychat-wasm chat --prompt "What is 2+2?" --temperature 0    # one answer on stdout, greedy
    pychat-wasm chat --prompt "List three fruits." --stop "3."  # the answer ends before the first "3."
    pychat-wasm chat base.gguf --lora tuned.lora.gguf --lora-scale 0.5   # a LoRA adapter applied at load

Interactive mode has line editing and history (readline), the commands /help, /reset, /system, /context,
/exit, and prints prompt and generation speed and the context budget after every answer. Ctrl-C stops the
answer being written; Ctrl-C or Ctrl-D at the prompt ends the program. The terminal keeps its conversation
(`TerminalChat`) and sends it whole with every turn, as the page does: the session keeps only its KV cache.
In one-shot mode only the answer goes to stdout; speed and notices go to stderr. A sampling option out of range exits with status 2 (as argparse does for a malformed one) and the
message the page shows for the same value: both go through sampler.settings_from_mapping.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Dict, Iterator, List, Optional, Sequence, TextIO

from .common import add_lora_options, fail, model_path
from ..errors import InvalidSettingsError, PychatError
from ..gguf.reader import GGUFFile
from ..model.config import DEFAULT_CONTEXT_CAP
from ..model.lora import open_adapters
from ..chat.sampler import SamplingSettings, settings_from_mapping
from ..chat.events import ContextBudget
from ..chat.session import ChatSession, GenerationStats
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
    path = model_path(args.model)
    if args.prompt is None:
        print("loading %s ..." % path, file=sys.stderr)
    gguf = GGUFFile.open(str(path))
    adapters = open_adapters(gguf, [(GGUFFile.open(file), scale) for file, scale in args.lora])  # checked first
    session = ChatSession.from_gguf(gguf, policy=args.policy, context_length=args.context)
    session.model.set_adapters(adapters)
    chat = TerminalChat(session, settings, stop_strings, args.system)
    if args.prompt is not None:
        stream_answer(chat, args.prompt, sys.stdout, report=sys.stderr)
        return 0
    return interactive(chat)


class TerminalChat:
    """What the terminal keeps: its conversation (a first "system" message for the system prompt, then user
    and assistant messages), the settings, and the last answer's context budget."""

    def __init__(self, session: ChatSession, settings: SamplingSettings, stop_strings: Sequence[str] = (),
                 system_prompt: Optional[str] = None):
        self.session, self.settings, self.stop_strings = session, settings, list(stop_strings)
        self.messages: List[Dict[str, str]] = []
        self.last_budget: Optional[ContextBudget] = None
        self.start(system_prompt)

    def start(self, system_prompt: Optional[str]) -> None:
        """A new conversation with `system_prompt` (None: the template's default)."""
        self.messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.last_budget = None

    @property
    def system_prompt(self) -> Optional[str]:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    def budget(self) -> ContextBudget:
        """The last answer's budget, or before any, that of the conversation as it stands."""
        return self.last_budget or self.session.budget(self.messages, self.settings)


def stream_answer(chat: TerminalChat, text: str, out: TextIO, report: TextIO) -> GenerationStats:
    """Answer `text` after the conversation: print the answer to `out` as it is generated, notices and the speed
    line to `report`. Only an answer that ends (an end token, a stop, max tokens, Ctrl-C) joins the conversation."""
    stats = GenerationStats()
    messages = chat.messages + [{"role": "user", "content": text}]
    for event in chat.session.reply(messages, chat.settings, chat.stop_strings):
        if event.kind == "piece":
            out.write(event.text)
            out.flush()
        elif event.kind == "notice":
            print("\n[%s]" % event.text, file=report, flush=True)
        elif event.kind == "done":
            stats = event.stats
            chat.messages = messages + [{"role": "assistant", "content": event.text}]
            chat.last_budget = event.budget
    out.write("\n")
    out.flush()
    stopped = " (stopped)" if stats.stop_reason == "cancelled" else ""
    print("[%s%s]" % (stats.summary(), stopped), file=report, flush=True)
    print(context_status(chat.budget()), file=report, flush=True)
    return stats


def context_status(budget: ContextBudget) -> str:
    """'[context: 812/2048 tokens (system 31, history 700, answer 81)]', with what the trimming did or will do."""
    line = "[context: %d/%d tokens (system %d, history %d, answer %d)" % (
        budget.used, budget.context, budget.system, budget.history, budget.answer)
    if budget.dropped:
        line += "; %d oldest message%s dropped" % (budget.dropped, "s" if budget.dropped > 1 else "")
    if budget.will_drop_next:
        line += "; the next message will drop the oldest turns"
    return line + "]"


@contextlib.contextmanager
def ctrl_c_cancels(session: ChatSession) -> Iterator[None]:
    """While the model writes, Ctrl-C asks the session to stop after the current token."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: session.cancel())
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
            with ctrl_c_cancels(chat.session):
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
