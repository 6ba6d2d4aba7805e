"""Evidence by shape, shared by the TUI, the CLI and the HTML report: series values as numbers, and
side-by-side evidence, a dict whose keys pair up by prefix (`harness_sent` / `template_sends`,
`harness_answer` / `template_answer`) split into shared rows and two paired columns; rendered by shape,
never by rung."""

from __future__ import annotations

import math
from typing import Any


def as_number(value: Any) -> float:
    """An evidence series value as a float; anything not a finite number becomes NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def humanise(key: str) -> str:
    """A key as words: `harness_sent` -> "harness sent"."""
    return key.replace("_", " ").replace("-", " ")


Cell = tuple[str, Any] | None  # (label, value)


def pair_sides(sample: dict[str, Any]) -> tuple[list[tuple[str, Any]], tuple[str, str], list[tuple[Cell, Cell]]] | None:
    """Split a side-by-side dict into shared rows, the two sides' names and the paired rows.

    Sides are the two key prefixes (before the first `_`) holding most keys, in the order
    they first appear; within a side, equal suffixes pair up (`answer` with `answer`),
    the rest pair in order (`sent` with `sends`). None when the keys do not pair.
    """
    groups: dict[str, list[str]] = {}
    for key in sample:
        prefix, sep, rest = key.partition("_")
        if sep and rest:
            groups.setdefault(prefix, []).append(key)
    ranked = sorted(groups, key=lambda p: -len(groups[p]))[:2]
    if len(ranked) == 2:
        left, right = sorted(ranked, key=lambda p: list(sample).index(groups[p][0]))
        left_keys, right_keys = groups[left], list(groups[right])
    elif len(sample) == 2:
        (left, right), left_keys, right_keys = list(sample), [list(sample)[0]], [list(sample)[1]]
    else:
        return None
    paired = set(left_keys) | set(right_keys)
    shared = [(key, value) for key, value in sample.items() if key not in paired]

    def suffix(key: str, side: str) -> str:
        return humanise(key[len(side) + 1:]) if key.startswith(side + "_") else ""

    exact = {}
    for key in left_keys:
        match = next((k for k in right_keys if k not in exact.values()
                      and suffix(k, right) == suffix(key, left) != ""), None)
        if match is not None:
            exact[key] = match
    rest_right = [k for k in right_keys if k not in exact.values()]
    partner = dict(exact)
    for key in left_keys:
        if key not in partner and rest_right:
            partner[key] = rest_right.pop(0)
    rows: list[tuple[Cell, Cell]] = []
    for key in left_keys:  # in the order the probe wrote them
        other = partner.get(key)
        rows.append(((suffix(key, left), sample[key]), (suffix(other, right), sample[other]) if other else None))
    rows += [(None, (suffix(k, right), sample[k])) for k in rest_right]
    return shared, (left, right), rows
