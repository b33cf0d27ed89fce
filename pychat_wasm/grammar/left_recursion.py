"""Left recursion in a rule table, refused as llama.cpp refuses it (llama_grammar_detect_left_recursion).

`expr ::= expr "+" term` would make parse stacks grow without end. Unlike llama.cpp's check, a nullable
prefix is followed all the way (llama.cpp looks one rule deep); a cycle of references in tail position
(`r ::= x r |` with nullable x, llama.cpp's "segfault" case) is allowed, as there stacks repeat instead
of growing.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from ..errors import GrammarError
from .elements import ALT, RULE_REF, Element


def alternatives(rule: List[Element]) -> List[List[Element]]:
    """A rule's alternatives, each without its ALT/END marker."""
    result: List[List[Element]] = [[]]
    for element in rule[:-1]:
        if element[0] == ALT:
            result.append([])
        else:
            result[-1].append(element)
    return result


def nullable_rules(rules: List[List[Element]]) -> List[bool]:
    """Which rules can match the empty string (a fixed point: an alternative of nullable references)."""
    nullable = [False] * len(rules)
    changed = True
    while changed:
        changed = False
        for rule_id, rule in enumerate(rules):
            if not nullable[rule_id] and any(all(kind == RULE_REF and nullable[value] for kind, value in alt)
                                             for alt in alternatives(rule)):
                nullable[rule_id] = changed = True
    return nullable


def check_left_recursion(rules: List[List[Element]], names: Dict[int, str]) -> None:
    """Refuse a rule that can reach itself at its left edge with something left to match after the reference.

    Edges go from a rule to each reference it can start with (references after a nullable prefix count);
    an edge "grows" when elements follow the reference, as then each round pushes them onto the stack.
    A cycle with a growing edge is left recursion; a cycle of tail references only repeats stacks.
    """
    nullable = nullable_rules(rules)
    edges: List[List[Tuple[int, bool]]] = [[] for _ in rules]
    for rule_id, rule in enumerate(rules):
        for alt in alternatives(rule):
            for i, (kind, value) in enumerate(alt):
                if kind != RULE_REF:
                    break
                edges[rule_id].append((value, i + 1 < len(alt)))
                if not nullable[value]:
                    break
    component = strongly_connected_components(edges)
    for rule_id, targets in enumerate(edges):
        for target, grows in targets:
            if grows and component[target] == component[rule_id]:
                raise GrammarError("rule %r is left-recursive (it can reach itself before matching anything), "
                                   "which GBNF does not allow: rewrite it with repetition, e.g. "
                                   "expr ::= term (\"+\" term)*" % names[rule_id])


def strongly_connected_components(edges: List[List[Tuple[int, bool]]]) -> List[int]:
    """Component number of each node (Tarjan's algorithm without recursion, so deep grammars are fine)."""
    n = len(edges)
    index, low, component = [-1] * n, [0] * n, [-1] * n
    on_stack, stack, counter, n_components = [False] * n, [], 0, 0
    for start in range(n):
        if index[start] >= 0:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack[node] = True
            if i < len(edges[node]):
                work.append((node, i + 1))
                target = edges[node][i][0]
                if index[target] < 0:
                    work.append((target, 0))
                elif on_stack[target]:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component[member] = n_components
                    if member == node:
                        break
                n_components += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return component
