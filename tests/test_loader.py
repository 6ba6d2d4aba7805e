"""The ladder format: every problem reported at once, at file:line:col, in plain words."""

from __future__ import annotations

import pytest

from helpers import engine_registry, write
from ladder.errors import InputError
from ladder.loader import load_ladder

GOOD_RUNG = """
  - id: {id}
    title: hypothesis {id}
    tier: {tier}
    probe: file-check
    after: {after}
    cost: {cost}
    why: because
    fix: fix it
"""


def ladder_text(*rungs: dict) -> str:
    body = "".join(GOOD_RUNG.format(**{"after": "[]", "cost": 1, "tier": "interface", **r}) for r in rungs)
    return "name: test\nrungs:\n" + body


def problems(path, registry=None) -> list[str]:
    with pytest.raises(InputError) as info:
        load_ladder(path, registry or engine_registry())
    return [str(p) for p in info.value.problems]


def test_good_ladder_loads_in_walk_order(tmp_path):
    path = write(tmp_path / "l.yaml", ladder_text(
        {"id": "c", "tier": "data"}, {"id": "a", "tier": "interface", "cost": 5},
        {"id": "b", "tier": "interface", "cost": 1}, {"id": "d", "tier": "interface", "after": "[c]"}))
    ladder = load_ladder(path, engine_registry())
    # b before a (cost), c before d although d is interface (after edge), c (data) after interface rungs
    assert ladder.order == ["b", "a", "c", "d"]


def test_file_order_breaks_remaining_ties(tmp_path):
    path = write(tmp_path / "l.yaml", ladder_text({"id": "z"}, {"id": "y"}, {"id": "x"}))
    assert load_ladder(path, engine_registry()).order == ["z", "y", "x"]


def test_every_problem_reported_at_once_with_positions(tmp_path):
    path = write(tmp_path / "bad.yaml", """
        name: bad
        rungs:
          - id: one
            title: t
            tier: interfase
            probe: file-chek
            why: w
            fix: f
            afterr: []
          - id: one
            title: t
            tier: data
            probe: file-check
            why: w
            fix: f
          - id: two
            title: t
            tier: data
            probe: file-check
            params: {pathh: x}
            after: [three, nowhere]
            why: w
            fix: f
          - id: three
            title: t
            tier: data
            probe: file-check
            after: [two]
            why: w
            fix: f
        """)
    found = problems(path)
    text = "\n".join(found)
    assert f"{path}:9:5: unknown key 'afterr' (did you mean 'after'?)" in text
    assert f"{path}:10:9: duplicate rung id 'one'" in text
    assert f"{path}:5:11:" in text and "unknown tier" in text
    assert f"{path}:6:12: unknown probe 'file-chek' (did you mean 'file-check'?); available:" in text
    assert "does not accept param 'pathh' (did you mean 'path'?); it accepts: path, sleep" in text
    assert "after names unknown rung 'nowhere'" in text
    assert "cycle in after: two -> three -> two" in text
    assert len(found) >= 7


def test_missing_required_key_named(tmp_path):
    path = write(tmp_path / "l.yaml", """
        name: l
        rungs:
          - id: lonely
            tier: data
            probe: file-check
            fix: f
        """)
    text = "\n".join(problems(path))
    assert "rung 'lonely': missing required key 'title'" in text
    assert "rung 'lonely': missing required key 'why'" in text


def test_long_cycle_spelled_out(tmp_path):
    path = write(tmp_path / "l.yaml", ladder_text(
        {"id": "a", "after": "[c]"}, {"id": "b", "after": "[a]"}, {"id": "c", "after": "[b]"}))
    assert any("cycle in after: a -> b -> c -> a" in p for p in problems(path))


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("name: [unclosed\n", "malformed YAML"),
    ("name: x\nrungs: 3\n", "rungs"),
])
def test_malformed_files(tmp_path, content, message):
    path = tmp_path / "l.yaml"
    path.write_text(content)
    assert any(message in p for p in problems(path))


def test_malformed_yaml_has_line_and_column(tmp_path):
    path = tmp_path / "l.yaml"
    path.write_text("name: ok\nrungs:\n  - id: a\n    title: [x\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:5:1: malformed YAML")


def test_extends_adds_overrides_and_disables(tmp_path):
    base = write(tmp_path / "base.yaml", ladder_text({"id": "a"}, {"id": "b"}, {"id": "c", "after": "[b]"}))
    child = write(tmp_path / "child.yaml", f"""
        name: child
        extends: {base}
        disable: [b]
        rungs:
          - id: a
            cost: 9
            fix: a better fix
          - id: d
            title: new one
            tier: data
            probe: file-check
            why: w
            fix: f
        """)
    ladder = load_ladder(child, engine_registry())
    assert [r.id for r in ladder.rungs] == ["a", "c", "d"]
    assert ladder.rung("a").cost == 9 and ladder.rung("a").fix == "a better fix"
    assert ladder.rung("a").title == "hypothesis a"
    assert ladder.rung("c").after == []  # the disabled rung's edge goes with it
    assert ladder.order == ["c", "a", "d"]


def test_extends_problems_point_into_the_right_file(tmp_path):
    base = write(tmp_path / "base.yaml", ladder_text({"id": "a"}))
    child = write(tmp_path / "child.yaml", f"""
        name: child
        extends: {base}
        disable: [zz]
        rungs:
          - id: a
            probe: nope
        """)
    text = "\n".join(problems(child))
    assert f"{child}:3:11: disable names unknown rung 'zz'" in text
    assert f"{child}:6:12: unknown probe 'nope'" in text


def test_unknown_shipped_ladder_name():
    with pytest.raises(InputError) as info:
        load_ladder("llm-checkpoin")
    assert "did you mean 'llm-checkpoint'" in str(info.value)
