"""What a chat turn reports: its events (`ChatEvent`), its counts and timings (`GenerationStats`), the context
budget (`ContextBudget`), and the answer being built (`Answer`). See pychat_wasm.chat.session for the event
kinds and how the budget is counted."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple


@dataclass
class GenerationStats:
    """Counts and timings of one answer."""

    prompt_tokens: int = 0  # prompt tokens run through the model (new ones only)
    reused_tokens: int = 0  # prompt tokens whose keys/values were already in the cache
    prompt_seconds: float = 0.0
    generated_tokens: int = 0  # tokens sampled, the closing end-of-turn token included
    generation_seconds: float = 0.0
    stop_reason: str = ""  # "eos" | "stop_string" | "grammar_end" | "length" | "cancelled" | "context_full"
    seed: Optional[int] = None
    draft_tokens: int = 0  # speculative draft tokens checked by a forward pass (speculative.py)
    draft_accepted: int = 0  # of which the sampler chose

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0

    def as_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), prompt_tps=self.prompt_tps, generation_tps=self.generation_tps)


@dataclass(frozen=True)
class ContextBudget:
    """The token ids a conversation and its answer occupy in the context (see "Context budget" in session.py).

    used = system + history + answer; will_drop_next = used + reserve > context."""

    used: int  # tokens in the context: the rendered prompt and the answer so far
    context: int  # the context length
    system: int  # the prompt's leading tokens before the first user/assistant message
    history: int  # the rest of the prompt
    answer: int  # tokens generated so far
    reserve: int  # room a next message needs: room for an answer plus the last user message's tokens
    dropped: int  # oldest user/assistant messages of the conversation left out of the prompt
    will_drop_next: bool  # a next message as long as the last one will drop more

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class ChatEvent:
    """One step of `ChatSession.reply`; `as_dict()` gives plain data for postMessage/JSON."""

    kind: str  # "progress" | "piece" | "done"
    text: str = ""  # a piece, or (done) the whole answer
    progress: Tuple[int, int] = (0, 0)  # (prompt tokens processed, prompt tokens to process)
    stats: Optional[GenerationStats] = None
    budget: Optional[ContextBudget] = None

    def as_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "progress": list(self.progress),
                "stats": self.stats.as_dict() if self.stats else None,
                "budget": self.budget.as_dict() if self.budget else None}


@dataclass
class Answer:
    """The answer being generated: shown text and bookkeeping for the stats."""

    text: List[str] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    prompt_tokens: int = 0  # the whole rendered prompt, reused tokens included
    system_tokens: int = 0  # its leading part that comes before the first user/assistant message
    message_tokens: int = 0  # its trailing part that the user's message added
    dropped: int = 0  # oldest user/assistant messages out of the context (see "Context budget")
