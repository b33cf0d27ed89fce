"""Stop strings: the ones a user gives, checked; and streaming answer text while holding back anything that
could become one."""
from __future__ import annotations

from typing import Any, List, Sequence

from ..errors import InvalidSettingsError

MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARACTERS = 200  # a longer one is a paste gone wrong, and each is searched for at every token


def stop_strings_from_values(values: Any) -> List[str]:
    """The stop strings a user gave (the CLI's --stop), checked: at most 16, each a non-empty text of at most
    200 characters. None or an empty list: no stop strings.

    >>> stop_strings_from_values(["User:", "\\n\\n"])
    ['User:', '\\n\\n']
    >>> stop_strings_from_values(["User:", ""])
    Traceback (most recent call last):
    pychat_wasm.errors.InvalidSettingsError: a stop string must be a non-empty text, not ''
    """
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise InvalidSettingsError("the stop strings must be a list of texts, not a %s" % type(values).__name__)
    if len(values) > MAX_STOP_STRINGS:
        raise InvalidSettingsError("there can be at most %d stop strings, not %d" % (MAX_STOP_STRINGS, len(values)))
    for value in values:
        if not isinstance(value, str) or not value:
            raise InvalidSettingsError("a stop string must be a non-empty text, not %r" % (value,))
        if len(value) > MAX_STOP_STRING_CHARACTERS:
            raise InvalidSettingsError("a stop string can be at most %d characters long, not %d"
                                       % (MAX_STOP_STRING_CHARACTERS, len(value)))
    return list(values)


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
