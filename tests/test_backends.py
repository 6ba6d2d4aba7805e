"""The backend contract: backends register through `ladder.backends`, and the runner skips a probe whose
declared capabilities no backend the case reaches offers, naming the capability and who offers it."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from helpers import engine_registry, write
from ladder.backends import (backend_classes, missing_capabilities, reached_backends, register_backend,
                             unregister_backend)
from ladder.case import Case
from ladder.loader import load_ladder
from ladder.models import Status
from ladder.probes.base import Probe, passed
from ladder.runner import Runner

ENDPOINT = "http://127.0.0.1:9/v1"  # never called: the enforcement happens before the probe runs


class CountsRuns(Probe):
    """Passes, and counts how often it really ran (a skipped probe must not run at all)."""

    name = "counts-runs"
    capabilities = ("hidden_states",)
    runs: ClassVar[int] = 0

    def run(self, ctx):
        type(self).runs += 1
        return passed("measured")


class ServedOnly(CountsRuns):
    name = "served-only"
    capabilities = ("chat",)


class HiddenStatesServer:
    """A third-party backend: a server that also returns hidden states (reaches cases with an endpoint)."""

    name: ClassVar[str] = "hidden-states-server"
    how_to_reach: ClassVar[str] = "give --endpoint URL of such a server"
    capabilities: ClassVar[frozenset[str]] = frozenset({"hidden_states"})

    @staticmethod
    def reaches(case: Any) -> bool:
        return bool(case.endpoint)


def run_one(tmp_path, probe: type[Probe], case: Case):
    registry = engine_registry()
    registry.register(probe.name, probe)
    body = (f"name: t\nrungs:\n  - id: r\n    title: r is wrong\n    tier: interface\n    probe: {probe.name}\n"
            "    after: []\n    why: w\n    fix: f\n")
    ladder = load_ladder(write(tmp_path / "l.yaml", body), registry)
    return Runner(ladder, case, registry=registry).run().rungs[0]


def test_the_builtin_backends_register_through_the_entry_point_group():
    classes = backend_classes()
    assert {"hf", "openai"} <= set(classes)
    assert {"weights", "hidden_states", "generate"} <= set(classes["hf"].capabilities)
    assert {"chat", "completions"} <= set(classes["openai"].capabilities)
    assert "weights" not in classes["openai"].capabilities


def test_a_probe_needing_what_the_served_path_lacks_skips_naming_it_and_who_offers_it(tmp_path):
    CountsRuns.runs = 0
    result = run_one(tmp_path, CountsRuns, Case(endpoint=ENDPOINT))
    assert result.status is Status.SKIP
    assert "`hidden_states`" in result.summary and "openai backend cannot give" in result.summary
    assert "hf backend (give --model DIR)" in result.summary
    assert result.evidence["missing_capabilities"] == ["hidden_states"]
    assert result.evidence["backends"] == ["openai"]
    assert CountsRuns.runs == 0


def test_a_probe_whose_capabilities_are_offered_runs(tmp_path):
    ServedOnly.runs = 0
    result = run_one(tmp_path, ServedOnly, Case(endpoint=ENDPOINT))
    assert result.status is Status.PASS and ServedOnly.runs == 1


def test_a_registered_backend_that_offers_the_capability_lets_the_probe_run(tmp_path):
    register_backend(HiddenStatesServer)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_backend(HiddenStatesServer)
        CountsRuns.runs = 0
        result = run_one(tmp_path, CountsRuns, Case(endpoint=ENDPOINT))
        assert result.status is Status.PASS and CountsRuns.runs == 1
    finally:
        unregister_backend(HiddenStatesServer.name)
    assert missing_capabilities(reached_backends(Case(endpoint=ENDPOINT)), ("hidden_states",)) is not None


def test_no_backend_reached_leaves_the_verdict_to_the_probes_needs():
    assert missing_capabilities(reached_backends(Case()), ("weights",)) is None
    lacking = missing_capabilities(reached_backends(Case(model="/nowhere")), ("chat", "completions"))
    assert lacking is not None and lacking[0] == ["chat", "completions"]
    assert "openai backend (give --endpoint URL) offers them" in lacking[1]


def test_each_servers_rendering_reply_is_read_as_its_documentation_gives_it():
    """The replies of vLLM/SGLang `/tokenize`, TGI `/chat_tokenize` and llama.cpp `/apply-template` (shapes from
    their documentation; vLLM's is also read from the real server in test_served_vllm)."""
    from ladder.backends.openai import RENDER_ENDPOINTS

    readers = {path: read for path, _, read in RENDER_ENDPOINTS}
    vllm = readers["/tokenize"]({"count": 3, "max_model_len": 128, "tokens": [3, 89, 87]})
    assert (vllm.ids, vllm.text) == ([3, 89, 87], None)
    tgi = readers["/chat_tokenize"]({"tokenize_response": [{"id": 1, "text": "<s>", "start": 0, "stop": 3}],
                                     "templated_text": "<s>[INST] hi [/INST]"})
    assert (tgi.ids, tgi.text) == ([1], "<s>[INST] hi [/INST]")
    llama_cpp = readers["/apply-template"]({"prompt": "<|im_start|>user\nhi<|im_end|>\n"})
    assert (llama_cpp.ids, llama_cpp.text) == (None, "<|im_start|>user\nhi<|im_end|>\n")
    with pytest.raises(KeyError):
        readers["/tokenize"]({"detail": "Not Found"})  # a 200 in another shape is not a rendering
