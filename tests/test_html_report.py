"""`--html`: one self-contained page, opened in a real headless Chromium (Debian's `chromium`): the culprit,
both sides of its evidence and every series plot are laid out on the page, and a screenshot is taken."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from helpers import run_cli

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian package `chromium`)")


def browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


def report_pair(tmp_path, case_name: str):
    from ladder.fixtures import cases

    case = cases.build_case(case_name, dest=tmp_path / case_name) / "case.yaml"
    page, data = tmp_path / f"{case_name}.html", tmp_path / f"{case_name}.json"
    done = run_cli("probe", str(case), "--keep-going", "--html", str(page), "--json", str(data), timeout=600)
    return done, page, json.loads(data.read_text())


def rendered_sizes(dom: str, attribute: str) -> list[tuple[int, int]]:
    return [(int(w), int(h)) for w, h in re.findall(attribute + r"[^>]*data-rendered=\"(\d+)x(\d+)\"", dom)]


@needs_chromium
def test_the_culprit_and_both_sides_are_rendered_first(tmp_path):
    done, page, report = report_pair(tmp_path, "founding")
    assert done.returncode == 1
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text  # no CDN
    dom = browser("--dump-dom", page.as_uri()).stdout
    culprit = report["culprit"]["rung"]
    assert f"Culprit: {culprit}" in dom
    assert dom.index(f"Culprit: {culprit}") < dom.index("<h2>Rungs</h2>"), "the culprit comes first"
    sides = next(r for r in report["rungs"] if r["id"] == culprit)["evidence"]["side_by_side"]
    for key in ("harness_sent", "template_sends", "harness_answer", "template_answer"):
        assert html.escape(sides[key].strip(), quote=False).split("\n")[0] in dom, key
    assert all(w > 0 and h > 0 for w, h in rendered_sizes(dom, "data-check=\"culprit\""))
    assert [s for s in rendered_sizes(dom, "data-check=\"side-by-side\"") if s[0] > 0 and s[1] > 0]
    shot = tmp_path / "shot.png"
    browser("--window-size=1280,1400", f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@needs_chromium
def test_every_series_is_a_plot_laid_out_on_the_page(tmp_path):
    _, page, report = report_pair(tmp_path, "fp16-overflow")
    expected = sum(1 for r in report["rungs"] for values in (r["evidence"].get("series") or {}).values()
                   if isinstance(values, list) and values)
    assert expected >= 10, "the walk reached the internals rungs"
    sizes = rendered_sizes(browser("--dump-dom", page.as_uri()).stdout, "class=\"plot\"")
    assert len(sizes) == expected and all(w > 0 and h > 0 for w, h in sizes), (len(sizes), expected)
