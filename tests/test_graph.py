"""The graph: walk order, ancestry and cycles agree with networkx's view of the DAG."""

from __future__ import annotations

import networkx as nx

from ladder.graph import ancestors, build_graph, find_cycles, walk_order
from ladder.models import Rung


def rung(rung_id: str, tier: str = "interface", after=(), cost: float = 1.0) -> Rung:
    return Rung(id=rung_id, title=rung_id, tier=tier, probe="p", after=list(after), cost=cost, why="w", fix="f")


def test_order_is_topological_with_tier_cost_file_ties():
    rungs = [rung("late", "architecture"), rung("pricey", cost=9), rung("cheap", cost=0.5),
             rung("data-one", "data"), rung("needs-data", "interface", after=["data-one"])]
    order = walk_order(rungs)
    assert order == ["cheap", "pricey", "data-one", "needs-data", "late"]
    graph = build_graph(rungs)
    assert list(nx.topological_sort(graph)) and all(order.index(a) < order.index(b) for a, b in graph.edges)


def test_ancestors_match_networkx():
    rungs = [rung("a"), rung("b", after=["a"]), rung("c", after=["b"]), rung("d", after=["a", "c"]), rung("e")]
    graph = build_graph(rungs)
    for r in rungs:
        assert ancestors(rungs, r.id) == nx.ancestors(graph, r.id)


def test_cycles_spelled_from_first_rung_in_file():
    rungs = [rung("x"), rung("a", after=["c"]), rung("b", after=["a"]), rung("c", after=["b"])]
    assert find_cycles(rungs) == [["a", "b", "c"]]
    assert find_cycles([rung("a"), rung("b", after=["a"])]) == []
