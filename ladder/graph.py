"""The rung graph: a networkx DAG from `after` edges, and the walk order.

The walk order is topological; among rungs free to go next, the one of the most
mundane tier goes first, then the cheapest, then the one earliest in the file.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx

    from ladder.models import Rung


def build_graph(rungs: list["Rung"]) -> "nx.DiGraph":
    """Edges go from a rung to the rungs that come `after` it; unknown ids are left out."""
    import networkx as nx

    graph = nx.DiGraph()
    ids = {rung.id for rung in rungs}
    for position, rung in enumerate(rungs):
        graph.add_node(rung.id, key=(rung.tier.rank, rung.cost, position))
    for rung in rungs:
        for before in rung.after:
            if before in ids:
                graph.add_edge(before, rung.id)
    return graph


def find_cycles(rungs: list["Rung"]) -> list[list[str]]:
    """Every elementary cycle, each rotated to start at its first rung in file order."""
    import networkx as nx

    graph = build_graph(rungs)
    position = {rung.id: i for i, rung in enumerate(rungs)}
    cycles = []
    for cycle in nx.simple_cycles(graph):
        start = min(range(len(cycle)), key=lambda i: position[cycle[i]])
        cycles.append(cycle[start:] + cycle[:start])
    return sorted(cycles, key=lambda c: [position[x] for x in c])


def walk_order(rungs: list["Rung"]) -> list[str]:
    """Topological order with ties broken by tier, then cost, then file order."""
    graph = build_graph(rungs)
    indegree = {node: graph.in_degree(node) for node in graph}
    ready = [(graph.nodes[n]["key"], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, node = heapq.heappop(ready)
        order.append(node)
        for successor in graph.successors(node):
            indegree[successor] -= 1
            if indegree[successor] == 0:
                heapq.heappush(ready, (graph.nodes[successor]["key"], successor))
    if len(order) != len(graph):
        raise ValueError("the rung graph has a cycle")  # the loader reports cycles first
    return order


def ancestors(rungs: list["Rung"], rung_id: str) -> set[str]:
    """Every rung that must come before `rung_id`, directly or through others."""
    import networkx as nx

    return nx.ancestors(build_graph(rungs), rung_id)
