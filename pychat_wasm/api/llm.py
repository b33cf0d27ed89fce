"""The engine as a library: `LLM`, with llama-cpp-python's method names and OpenAI's response shapes.

    from pychat_wasm import LLM
    llm = LLM("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    tuned = LLM("models/SmolLM2-135M-Instruct.Q4_1.gguf", lora=["tuned.lora.gguf"])   # or [("tuned.lora.gguf", 0.5)]
    reply = llm.create_chat_completion([{"role": "user", "content": "Hi!"}], temperature=0, max_tokens=32)
    print(reply["choices"][0]["message"]["content"])
    for chunk in llm.create_chat_completion(messages, stream=True):
        print(chunk["choices"][0]["delta"].get("content", ""), end="")

Code written for llama-cpp-python's `Llama` ports by changing the import. The defaults are OpenAI's
(options.py): temperature 1, top_p 1, no penalties, max_tokens None = until the context is full.

A conversation that does not fit the context with room for the answer is refused (ContextFullError), unless
truncation="auto" (OpenAI's Responses API name): then its oldest turns are dropped, as the page's and the
terminal's chats do (`pychat-wasm chat` is built on this class). Responses carry llama.cpp's `timings` and
the chat's `context_budget` next to `usage` (streamed: with stream_options={"include_usage": True}; with
"continuous_usage_stats": True too, every chunk carries them as they stand, as the page's meter shows them).

It runs on one ChatSession (chat/session.py), so the KV cache is reused across calls for the longest common
token prefix: a conversation's next turn runs only its new tokens. One LLM runs one call at a time (the HTTP
server queues its requests); a streamed call that is not iterated to the end stops where its reader stopped.

logprobs are the log-softmax of the raw logits, before temperature and penalties: the model's distribution,
as OpenAI reports it. Embeddings are the mean over the tokens of the final-norm hidden states (llama.cpp's
`--pooling mean`), L2-normalised unless normalize=False; computing one clears the KV cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import shapes
from .options import (api_embedding_inputs, api_messages, api_prompt, api_settings, api_stop_strings,
                      continuous_usage, drops_old_turns, includes_usage, top_logprobs_count, whole_number_in_range, MAX_TOP_LOGPROBS)
from .structured import ConstrainedSampler, api_constraint, response_format_gbnf
from .tool_messages import for_template
from .tool_formats import template_format
from .tools import CallReader, ToolPlan
from .generation import Generation, chat_chunks, chat_response, last_step, naming, text_chunks, text_response
from ..chat.sampler import Sampler, SamplingSettings
from ..chat.session import ChatSession
from ..errors import ContextFullError, InvalidConversationError, InvalidRequestError, InvalidSettingError
from ..gguf.reader import GGUFFile
from ..model.lora import open_adapters
from ..grammar import GrammarConstraint

Messages = List[Dict[str, Any]]
ModelFile = Union[str, Path, GGUFFile]


def _gguf(file: ModelFile) -> GGUFFile:
    return file if isinstance(file, GGUFFile) else GGUFFile.open(str(file))


def lora_files(lora: Sequence[Union[ModelFile, Tuple[ModelFile, float]]]) -> List[Tuple[GGUFFile, float]]:
    """LLM's lora=[path, (path, scale), ...] as open adapter files and scales (scale 1 when not given)."""
    if isinstance(lora, (str, Path, GGUFFile)):
        raise InvalidSettingError("lora must be a list of adapter files or (file, scale) pairs, not one file")
    files = []
    for item in lora:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            files.append((_gguf(item[0]), item[1]))
        elif isinstance(item, (str, Path, GGUFFile)):
            files.append((_gguf(item), 1.0))
        else:
            raise InvalidSettingError("each lora item must be an adapter file or a (file, scale) pair, not %r"
                                      % (item,))
    return files


class LLM:
    """A GGUF model behind llama-cpp-python's methods. Not thread-safe: one call at a time."""

    def __init__(self, model_path: ModelFile, *, context_length: Optional[int] = None,
                 policy: str = "auto", seed: Optional[int] = None,
                 lora: Sequence[Union[ModelFile, Tuple[ModelFile, float]]] = (), speculative: bool = True):
        """model_path: a .gguf file, or an open GGUFFile (in the browser the model is bytes, not a file).
        lora: LoRA adapters (llama.cpp's GGUF files, model/lora.py) applied at load, each a file or a (file,
        scale) pair; one made for another base model raises AdapterMismatchError. speculative: draft tokens
        from the prompt and check them in one pass where that pays (chat/speculative.py; on by default); the
        output is the same either way."""
        gguf = _gguf(model_path)
        adapters = open_adapters(gguf, lora_files(lora))  # checked before the weights are built
        session = ChatSession.from_gguf(gguf, policy=policy, context_length=context_length)
        session.model.set_adapters(adapters)
        if not speculative:
            session.speculative = None
        self._attach(session, gguf.name, seed)

    @classmethod
    def around(cls, session: ChatSession, model_path: str, *, seed: Optional[int] = None,
               stepwise: bool = False) -> "LLM":
        """An LLM around a session already loaded: the browser worker's, which may hold one shard of a model
        split across workers. stepwise: a non-streamed call returns its steps instead of its response, an
        iterator of None once per generated piece and then the response, so that the caller can stop between
        two (the worker's JS loop lets Stop in there); a stream is stepwise already."""
        llm = cls.__new__(cls)
        llm._attach(session, model_path, seed, stepwise)
        return llm

    def _attach(self, session: ChatSession, model_path: str, seed: Optional[int], stepwise: bool = False) -> None:
        self.model_path = model_path
        self.model_name = Path(model_path).name
        self.seed = seed  # for calls that give none; None: a fresh one per call
        self.session = session
        self.tokenizer = session.tokenizer
        self.stepwise = stepwise
        self.generated_tokens = 0  # every token sampled by this LLM, counted as it is sampled

    def n_ctx(self) -> int:
        return self.session.context_length

    def cancel(self) -> None:
        """Stop the running generation after its current token (safe from another thread)."""
        self.session.cancel()

    # ---- tokens ---------------------------------------------------------------------------------------------

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = False) -> List[int]:
        """Token ids of `text` (str or UTF-8 bytes); add_bos: the model's BOS if it asks for one; special: parse
        special-token texts such as <|im_start|>."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise InvalidRequestError("text must be a str or bytes, not %s" % type(text).__name__, "text")
        return self.tokenizer.encode(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> bytes:
        """The bytes of `tokens` (as llama-cpp-python: bytes, since a token can end inside a character);
        special tokens are left out unless special=True."""
        vocab = self.tokenizer.vocab_size
        if isinstance(tokens, (str, bytes)) or not all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) and 0 <= t < vocab for t in tokens):
            raise InvalidRequestError("tokens must be a list of token ids in 0..%d" % (vocab - 1), "tokens")
        return b"".join(self.tokenizer.token_bytes(int(t)) for t in tokens
                        if special or not self.tokenizer.is_special(int(t)))

    # ---- completions ----------------------------------------------------------------------------------------

    def create_chat_completion(self, messages: Messages, *, max_tokens: Optional[int] = None,
                               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
                               stop: Union[None, str, List[str]] = None, seed: Optional[int] = None,
                               stream: bool = False, logprobs: bool = False, top_logprobs: Optional[int] = None,
                               repeat_penalty: float = 1.0, repeat_last_n: Optional[int] = None,
                               frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                               response_format: Optional[Dict[str, Any]] = None, grammar: Optional[str] = None,
                               tools: Optional[List[Dict[str, Any]]] = None, tool_choice: Any = None,
                               truncation: str = "disabled", stream_options: Optional[Dict[str, Any]] = None) -> Any:
        """Answer `messages` with the model's chat template: an OpenAI chat.completion dict, or with stream=True
        an iterator of chat.completion.chunk dicts (the first carries the role, the last the finish_reason;
        stream_options={"include_usage": True} adds one without choices carrying usage, timings and
        context_budget; with "continuous_usage_stats": True too, vLLM's, every chunk carries the usage and
        context_budget so far). response_format / grammar constrain the answer (structured.py); tools / tool_choice
        and messages with tool calls or results: tools.py, tool_messages.py. truncation="auto" drops the oldest
        turns that do not fit (the default, "disabled", refuses them)."""
        conversation = for_template(api_messages(messages), self.session.template)
        top = top_logprobs_count(logprobs, top_logprobs)
        include_usage, drops_turns = includes_usage(stream_options, stream), drops_old_turns(truncation)
        continuous = continuous_usage(stream_options, stream)
        plan = None if tools is None and tool_choice is None else ToolPlan(
            tools, tool_choice, template_format(self.session.template))
        if plan is not None:
            if plan.required and (grammar is not None or response_format_gbnf(response_format) is not None):
                raise InvalidRequestError("tool_choice: a required call cannot take a grammar or a JSON "
                                          "response_format too", "tool_choice")
            conversation, grammar = plan.messages(conversation), plan.gbnf(self.tokenizer) or grammar
        reader = plan.reader() if plan is not None else CallReader({})
        settings = self._settings(locals())
        stop_strings = api_stop_strings(stop)
        self._fresh_stream(api_constraint(response_format, grammar, self.tokenizer))
        try:
            events = self.session.reply(conversation, settings, stop_strings,
                                        plan.template_tools() if plan is not None else None)
        except InvalidConversationError as exc:
            raise InvalidRequestError("messages: %s" % exc, "messages") from None
        run = Generation(self, events, top, "messages", drops_turns)
        if stream:
            return chat_chunks(run, self.model_name, reader, include_usage, continuous)
        return self._whole(chat_response(run, self.model_name, reader))

    def context_budget(self, messages: Messages, *, max_tokens: Optional[int] = None) -> Dict[str, Any]:
        """The context `messages` (possibly none) take before an answer of up to max_tokens, as a response's
        context_budget reports it; nothing runs."""
        conversation = for_template(api_messages(messages), self.session.template) if messages else []
        try:
            budget = self.session.budget(conversation, api_settings({"max_tokens": max_tokens}, self.n_ctx()))
        except InvalidConversationError as exc:
            raise InvalidRequestError("messages: %s" % exc, "messages") from None
        return budget.as_dict()

    def create_completion(self, prompt: Union[str, List[int]], *, max_tokens: Optional[int] = 16,
                          temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
                          stop: Union[None, str, List[str]] = None, seed: Optional[int] = None,
                          stream: bool = False, logprobs: Optional[int] = None, repeat_penalty: float = 1.0,
                          repeat_last_n: Optional[int] = None, frequency_penalty: float = 0.0,
                          presence_penalty: float = 0.0, response_format: Optional[Dict[str, Any]] = None,
                          grammar: Optional[str] = None, stream_options: Optional[Dict[str, Any]] = None) -> Any:
        """Continue a raw prompt (no chat template; max_tokens defaults to 16 as in OpenAI's legacy API): an
        OpenAI text_completion dict, or with stream=True an iterator of them, one per piece of text (and with
        stream_options={"include_usage": True} a last one without choices carrying usage and timings).
        response_format / grammar constrain the continuation (structured.py)."""
        prompt = api_prompt(prompt)
        include_usage = includes_usage(stream_options, stream)
        if continuous_usage(stream_options, stream):
            raise InvalidRequestError("stream_options: continuous_usage_stats is for chat completions (a "
                                      "completion has no context budget to report)", "stream_options")
        top = None if logprobs is None else whole_number_in_range(logprobs, "logprobs", 0, MAX_TOP_LOGPROBS)
        ids = prompt if isinstance(prompt, list) else self.tokenize(prompt, add_bos=True, special=True)
        if isinstance(prompt, list):
            self.detokenize(ids)  # checks the ids
        if not ids:
            raise InvalidRequestError("prompt: the prompt encodes to no tokens", "prompt")
        if len(ids) >= self.n_ctx():
            raise naming(ContextFullError("prompt: the prompt has %d tokens and the context holds %d"
                                           % (len(ids), self.n_ctx())), "prompt")
        settings = self._settings(locals())
        stop_strings = api_stop_strings(stop)
        self._fresh_stream(api_constraint(response_format, grammar, self.tokenizer))
        run = Generation(self, self.session.complete(ids, settings, stop_strings), top, "prompt")
        return text_chunks(run, self.model_name, include_usage) if stream else self._whole(text_response(run, self.model_name))

    __call__ = create_completion

    def _settings(self, arguments: Dict[str, Any]) -> SamplingSettings:
        names = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "repeat_penalty", "repeat_last_n",
                 "frequency_penalty", "presence_penalty")
        values = {name: arguments[name] for name in names}
        if values["seed"] is None:
            values["seed"] = self.seed
        return api_settings(values, self.n_ctx())

    def _whole(self, steps: Iterator[Optional[Dict[str, Any]]]) -> Any:
        """A non-streamed call's response, or for a stepwise LLM its steps."""
        return steps if self.stepwise else last_step(steps)

    def _fresh_stream(self, constraint: Optional[GrammarConstraint] = None) -> None:
        """Each call starts its own random stream, so a given seed repeats its answer (the chat instead
        continues one seeded stream across a conversation's turns); with a constraint the choices go through
        ConstrainedSampler."""
        sampler = Sampler()
        self.session.sampler = sampler if constraint is None else ConstrainedSampler(
            sampler, constraint, constraint.index.end_ids[0])

    # ---- embeddings -----------------------------------------------------------------------------------------

    def embed(self, input: Union[str, List[str]], normalize: bool = True) -> Any:
        """The embedding of a text (a list of floats), or of each text of a list."""
        vectors, _ = self._embeddings(api_embedding_inputs(input), normalize)
        return vectors[0] if isinstance(input, str) else vectors

    def create_embedding(self, input: Union[str, List[str]], *, normalize: bool = True) -> Dict[str, Any]:
        """OpenAI's embeddings response for a text or a list of texts."""
        vectors, tokens = self._embeddings(api_embedding_inputs(input), normalize)
        return shapes.embeddings(self.model_name, vectors, tokens)

    def _embeddings(self, texts: List[str], normalize: bool) -> Tuple[List[List[float]], int]:
        """(one vector per text, the tokens they took). The model's cache then holds the last text's tokens
        (its ids say so), so the next completion reuses whatever prefix still matches."""
        encoded = [self.tokenize(text, add_bos=True, special=True) for text in texts]
        for ids in encoded:
            if len(ids) > self.n_ctx():
                raise naming(ContextFullError("input: a text of %d tokens is longer than the context of %d "
                                               "tokens" % (len(ids), self.n_ctx())), "input")
        vectors = []
        for ids in encoded:
            hidden = self.session.model.final_hidden_states(ids)  # [n, dim]
            vector = hidden.astype(np.float64).mean(axis=0)  # [dim]
            if normalize:
                vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            vectors.append(vector.tolist())
        return vectors, sum(len(ids) for ids in encoded)
