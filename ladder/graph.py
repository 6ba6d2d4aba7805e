"""The rung graph from `after` edges, and the walk order.

The walk order is topological; among rungs free to go next, the one of the most
mundane tier goes first, then the cheapest, then the one earliest in the file.
Order and ancestry are computed on plain adjacency lists (importing networkx
costs more than `ladder rules` may take); networkx spells out the cycles when
there are any, and `build_graph` gives the DAG as a `networkx.DiGraph`.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx

    from ladder.models import Rung


def _edges(rungs: list["Rung"]) -> dict[str, list[str]]:
    """rung id -> the rungs that come after it (edges to unknown ids left out)."""
    ids = {rung.id for rung in rungs}
    successors: dict[str, list[str]] = {rung.id: [] for rung in rungs}
    for rung in rungs:
        for before in rung.after:
            if before in ids and rung.id not in successors[before]:
                successors[before].append(rung.id)
    return successors


def build_graph(rungs: list["Rung"]) -> "nx.DiGraph":
    """The DAG as networkx sees it: an edge from a rung to each rung that comes after it."""
    import networkx as nx

    graph = nx.DiGraph()
    for position, rung in enumerate(rungs):
        graph.add_node(rung.id, key=(rung.tier.rank, rung.cost, position))
    for before, afters in _edges(rungs).items():
        graph.add_edges_from((before, after) for after in afters)
    return graph


def _kahn(rungs: list["Rung"]) -> list[str]:
    successors = _edges(rungs)
    key = {rung.id: (rung.tier.rank, rung.cost, position) for position, rung in enumerate(rungs)}
    indegree = {rung.id: 0 for rung in rungs}
    for afters in successors.values():
        for after in afters:
            indegree[after] += 1
    ready = [(key[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, node = heapq.heappop(ready)
        order.append(node)
        for successor in successors[node]:
            indegree[successor] -= 1
            if indegree[successor] == 0:
                heapq.heappush(ready, (key[successor], successor))
    return order


def find_cycles(rungs: list["Rung"]) -> list[list[str]]:
    """Every elementary cycle, each rotated to start at its first rung in file order."""
    if len(_kahn(rungs)) == len(rungs):
        return []
    import networkx as nx

    position = {rung.id: i for i, rung in enumerate(rungs)}
    cycles = []
    for cycle in nx.simple_cycles(build_graph(rungs)):
        start = min(range(len(cycle)), key=lambda i: position[cycle[i]])
        cycles.append(cycle[start:] + cycle[:start])
    return sorted(cycles, key=lambda c: [position[x] for x in c])


def walk_order(rungs: list["Rung"]) -> list[str]:
    """Topological order with ties broken by tier, then cost, then file order."""
    order = _kahn(rungs)
    if len(order) != len(rungs):
        raise ValueError("the rung graph has a cycle")  # the loader reports cycles first
    return order


def ancestors(rungs: list["Rung"], rung_id: str) -> set[str]:
    """Every rung that must come before `rung_id`, directly or through others."""
    before = {rung.id: [a for a in rung.after] for rung in rungs}
    seen: set[str] = set()
    stack = list(before.get(rung_id, []))
    while stack:
        node = stack.pop()
        if node in seen or node not in before:
            continue
        seen.add(node)
        stack.extend(before[node])
    return seen
