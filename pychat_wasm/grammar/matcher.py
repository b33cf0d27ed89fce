"""Matching text against a grammar: sets of parse stacks, advanced one character at a time.

This is llama.cpp's matcher (`src/llama-grammar.cpp`: llama_grammar_advance_stack, _accept_chr,
_match_char, _match_partial_char, decode_utf8). A *position* indexes one element of the flattened rule
table; a *stack* is a tuple of positions, top last: the element to match next and, below it, where to
continue after each enclosing rule ends. Every stack is advanced until its top is a terminal (a character
class or a token element); the empty stack means the grammar has matched completely.

Here a set of stacks is interned as an integer *state*, so that `step(state, char)` is a dictionary
look-up after its first computation: masking a vocabulary walks thousands of (state, char) pairs that
repeat. Text arrives as token bytes; a character split across tokens is carried as a `Partial` (the bits
read so far and the bytes still to come), as llama.cpp's llama_partial_utf8.

    >>> m = Matcher(Grammar.parse('root ::= "a" [0-9]+'))
    >>> s = m.accept_text(m.initial, "a12")
    >>> m.allows_end(s), m.accept_text(s, "x") == m.dead
    (True, True)
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

from ..errors import GrammarError
from .gbnf import (ALT, CHAR, CHAR_ALT, CHAR_ANY, CHAR_NOT, CHAR_RNG_UPPER, END, RULE_REF, TOKEN, TOKEN_NOT,
                   Grammar)

Stack = Tuple[int, ...]
MAX_STACKS = 4096        # stacks in one state: beyond this a grammar is too ambiguous to follow
MAX_STACK_DEPTH = 4096   # nesting of rules inside one another (a JSON value nested this deep, say)
MAX_STEP_WORK = 1 << 17  # stacks produced while reading one character, duplicates included


class Partial(NamedTuple):
    """The start of a UTF-8 character: its bits so far and how many continuation bytes are missing."""
    value: int
    n_remain: int


def decode_utf8(raw: bytes, partial: Optional[Partial]) -> Tuple[Optional[List[int]], Optional[Partial]]:
    """Code points of `raw` after an unfinished character `partial`; (None, None) for invalid UTF-8.

    >>> decode_utf8("é".encode()[:1], None), decode_utf8(b"\\xa9!", Partial(3, 1))
    (([], Partial(value=3, n_remain=1)), ([233, 33], None))
    """
    points: List[int] = []
    value, n_remain = partial if partial else (0, 0)
    for byte in raw:
        if n_remain:
            if byte >> 6 != 2 or not _well_formed_second(value, n_remain, byte):
                return None, None
            value = (value << 6) | (byte & 0x3F)
            n_remain -= 1
            if n_remain == 0:
                points.append(value)
            continue
        if byte < 0x80:
            points.append(byte)
        elif byte >> 5 == 6 and byte >= 0xC2:
            value, n_remain = byte & 0x1F, 1
        elif byte >> 4 == 14:
            value, n_remain = byte & 0x0F, 2
        elif byte >> 3 == 30 and byte <= 0xF4:
            value, n_remain = byte & 0x07, 3
        else:
            return None, None  # a continuation byte with nothing to continue, C0/C1 (overlong), or 0xF5..0xFF
    return points, (Partial(value, n_remain) if n_remain else None)


def _well_formed_second(value: int, n_remain: int, byte: int) -> bool:
    """Whether a continuation byte may follow what was read (Unicode's table of well-formed UTF-8): after E0
    only A0..BF (shorter forms are overlong), after ED only 80..9F (not a surrogate), after F0 only 90..BF,
    after F4 only 80..8F (at most U+10FFFF). A 3-byte lead leaves value <= 0xF with 2 bytes to go; a 4-byte
    lead 3 bytes to go; any other state is past the second byte."""
    if n_remain == 2 and value <= 0xF:
        return not (value == 0x0 and byte < 0xA0 or value == 0xD and byte >= 0xA0)
    if n_remain == 3:
        return not (value == 0x0 and byte < 0x90 or value == 0x4 and byte >= 0x90)
    return True


class Matcher:
    """The parse states of one grammar. States are ints; `dead` has no stacks left (the text was rejected)."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar
        self.elements: List[Tuple[int, int]] = []
        self.rule_start: List[int] = []
        for rule in grammar.rules:
            self.rule_start.append(len(self.elements))
            self.elements.extend(rule)
        self.char_sets = {pos: self._char_set(pos) for pos, (kind, _) in enumerate(self.elements)
                          if kind in (CHAR, CHAR_NOT, CHAR_ANY)}
        self.states: List[Tuple[Stack, ...]] = []        # state -> its stacks
        self.state_ids: Dict[Tuple[Stack, ...], int] = {}
        self.steps: List[Dict[int, int]] = []             # state -> {code point: next state}
        self._advanced: Dict[Stack, List[Stack]] = {}
        self.dead = self.intern(())
        root = self.rule_start[grammar.root]
        starts = [(pos,) if not self.is_end(pos) else () for pos in self.alternative_starts(root)]
        self.initial = self.intern(tuple(dict.fromkeys(s for start in starts for s in self.advance(start))))

    # -- the rule table ------------------------------------------------------------------------------

    def is_end(self, pos: int) -> bool:
        return self.elements[pos][0] in (END, ALT)

    def alternative_starts(self, pos: int) -> List[int]:
        """Positions where each alternative of the rule starting at `pos` begins."""
        starts = [pos]
        while self.elements[pos][0] != END:
            if self.elements[pos][0] == ALT:
                starts.append(pos + 1)
            pos += 1
        return starts

    def _char_set(self, pos: int) -> Tuple[bool, Tuple[Tuple[int, int], ...], int]:
        """(positive, inclusive ranges, position after the class) of the class starting at `pos`."""
        kind = self.elements[pos][0]
        ranges = []
        while True:
            low = self.elements[pos][1]
            if self.elements[pos][0] == CHAR_ANY:
                ranges.append((0, 0x10FFFF))
                pos += 1
            elif self.elements[pos + 1][0] == CHAR_RNG_UPPER:
                ranges.append((low, self.elements[pos + 1][1]))
                pos += 2
            else:
                ranges.append((low, low))
                pos += 1
            if self.elements[pos][0] != CHAR_ALT:
                return kind != CHAR_NOT, tuple(ranges), pos

    def char_matches(self, pos: int, point: int) -> bool:
        positive, ranges, _ = self.char_sets[pos]
        return any(low <= point <= high for low, high in ranges) == positive

    def partial_matches(self, pos: int, partial: Partial) -> bool:
        """Whether some completion of `partial` can match the class at `pos` (llama_grammar_match_partial_char)."""
        value, n_remain = partial
        if n_remain == 1 and value < 2:
            return False  # an overlong encoding of a 7-bit character
        low = value << (6 * n_remain)
        high = low | ((1 << (6 * n_remain)) - 1)
        if low == 0:
            low = {2: 1 << 11, 3: 1 << 16}.get(n_remain, low)
        positive, ranges, _ = self.char_sets[pos]
        if any(a <= high and low <= b for a, b in ranges):
            return positive  # as llama.cpp: a negated class that overlaps is refused, though it may leave a gap
        return not positive

    # -- stacks ------------------------------------------------------------------------------------

    def advance(self, stack: Stack) -> List[Stack]:
        """The stacks `stack` expands to, each with a terminal on top (or empty: the grammar is done)."""
        done = self._advanced.get(stack)
        if done is not None:
            return done
        result: List[Stack] = []
        seen = set()
        todo = [stack]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            if not current or self.elements[current[-1]][0] != RULE_REF:
                result.append(current)  # unique: `seen` lets each stack through once
                continue
            if len(current) > MAX_STACK_DEPTH or len(seen) > MAX_STACKS * 16:
                raise GrammarError("the grammar expands beyond what the matcher follows (%d rules deep, %d "
                                   "expansions at one point)" % (MAX_STACK_DEPTH, MAX_STACKS * 16))
            pos = current[-1]
            below = current[:-1] if self.is_end(pos + 1) else current[:-1] + (pos + 1,)
            for start in self.alternative_starts(self.rule_start[self.elements[pos][1]]):
                todo.append(below if self.is_end(start) else below + (start,))
        if len(self._advanced) > 20_000:
            self._advanced.clear()
        self._advanced[stack] = result
        return result

    def intern(self, stacks: Tuple[Stack, ...]) -> int:
        state = self.state_ids.get(stacks)
        if state is None:
            if len(stacks) > MAX_STACKS:
                raise GrammarError("the grammar is too ambiguous: %d ways to read the text so far" % len(stacks))
            state = len(self.states)
            self.states.append(stacks)
            self.state_ids[stacks] = state
            self.steps.append({})
        return state

    def step(self, state: int, point: int) -> int:
        """The state after one more character (llama_grammar_accept: every stack whose top accepts it)."""
        nxt = self.steps[state].get(point)
        if nxt is not None:
            return nxt
        stacks: Dict[Stack, None] = {}  # an ordered set
        work = 0
        for stack in self.states[state]:
            if stack and stack[-1] in self.char_sets and self.char_matches(stack[-1], point):
                after = self.char_sets[stack[-1]][2]
                rest = stack[:-1] if self.is_end(after) else stack[:-1] + (after,)
                expanded = self.advance(rest)
                stacks.update(dict.fromkeys(expanded))
                work += len(expanded)
                if len(stacks) > MAX_STACKS or work > MAX_STEP_WORK:
                    raise GrammarError("the grammar is too ambiguous to follow: reading one character makes more "
                                       "than %d parse stacks (%d distinct)" % (work, len(stacks)))
        nxt = self.intern(tuple(stacks))
        self.steps[state][point] = nxt
        return nxt

    def step_token(self, state: int, token_id: int) -> int:
        """The state after a whole token matched by id: only stacks topped by <[id]> or !<[id]> move."""
        stacks: Dict[Stack, None] = {}
        for stack in self.states[state]:
            if stack and self.elements[stack[-1]][0] in (TOKEN, TOKEN_NOT):
                kind, value = self.elements[stack[-1]]
                if (value == token_id) == (kind == TOKEN):
                    rest = stack[:-1] if self.is_end(stack[-1] + 1) else stack[:-1] + (stack[-1] + 1,)
                    stacks.update(dict.fromkeys(self.advance(rest)))
        return self.intern(tuple(stacks))

    def char_part(self, state: int) -> int:
        """The state made of the stacks that read characters (and the finished one), without token tops."""
        return self.intern(tuple(s for s in self.states[state] if not s or s[-1] in self.char_sets))

    def has_token_tops(self, state: int) -> bool:
        return any(s and s[-1] not in self.char_sets for s in self.states[state])

    # -- text --------------------------------------------------------------------------------------

    def accept_points(self, state: int, points: List[int]) -> int:
        for point in points:
            state = self.step(state, point)
            if state == self.dead:
                break
        return state

    def accept_text(self, state: int, text: str) -> int:
        """The state after `text` (the dead state if the grammar cannot read it)."""
        return self.accept_points(state, [ord(c) for c in text])

    def accept_piece(self, state: int, partial: Optional[Partial], token_id: int,
                     raw: bytes) -> Tuple[int, Optional[Partial]]:
        """The state after a token (llama_grammar_accept_token): token tops match its id, the rest its bytes.

        A token that ends inside a character survives only where some completion of it could match.
        """
        points, new_partial = decode_utf8(raw, partial)
        if points is None:
            return self.dead, None
        by_id = self.step_token(state, token_id) if self.has_token_tops(state) else self.dead
        by_text = self.accept_points(self.char_part(state), points)
        if new_partial is not None:
            by_text = self.intern(tuple(s for s in self.states[by_text]
                                        if s and self.partial_matches(s[-1], new_partial)))
        if by_id == self.dead:
            return by_text, new_partial
        merged = dict.fromkeys(self.states[by_text] + self.states[by_id])
        return self.intern(tuple(merged)), new_partial

    def allows_end(self, state: int) -> bool:
        """Whether the text read so far is a complete match: some stack is empty."""
        return () in self.states[state]
