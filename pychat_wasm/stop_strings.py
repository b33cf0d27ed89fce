"""Streaming answer text while holding back anything that could become a stop string."""
from __future__ import annotations

from typing import Sequence


class StopStringFilter:
    """Streams text but holds back anything that could be the start of a stop string.

    >>> f = StopStringFilter(["</s>"])
    >>> f.feed("Hello <"), f.feed("/"), f.feed("s> more"), f.stopped
    ('Hello ', '', '', True)
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stop_strings = [s for s in stop_strings if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is now safe to show."""
        self.pending += text
        hits = [self.pending.find(s) for s in self.stop_strings if s in self.pending]
        if hits:
            self.stopped = True
            safe, self.pending = self.pending[: min(hits)], ""
            return safe
        held = self._longest_partial_stop()
        safe = self.pending[: len(self.pending) - held]
        self.pending = self.pending[len(safe):]
        return safe

    def flush(self) -> str:
        """Whatever was held back, once the answer is over without a stop string."""
        rest, self.pending = self.pending, ""
        return rest

    def _longest_partial_stop(self) -> int:
        """Length of the longest suffix of `pending` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest
