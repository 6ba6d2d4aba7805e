"""Probes reach the model only through the `Backend` contract (`ladder.backends.contract`): each backend
implements the methods of the capabilities it declares and refuses the others (`MissingCapability`, a skip
at run time), and a probe that uses a capability it did not declare is an error, so that the runner's
capability check before each rung covers everything the probe does."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from helpers import engine_registry, write
from ladder.backends.contract import Backend, MissingCapability
from ladder.case import Case
from ladder.loader import load_ladder
from ladder.models import Status
from ladder.probes.base import Probe, passed
from ladder.runner import Runner

# the methods of each capability, as the contract's docstring lists them
METHODS = {"chat_template": ("render",), "tokenize": ("tokenize", "detokenize", "tokenizer"),
           "generate": ("generate", "stop_ids", "generation_config"), "logits": ("score", "greedy_agreement"),
           "weights": ("network",), "hidden_states": ("network",), "chat": ("chat",),
           "completions": ("complete",), "render_template": ("rendering",)}
ENDPOINT = "http://127.0.0.1:9/v1"  # never called


def own(cls: type, method: str) -> bool:
    return getattr(cls, method) is not getattr(Backend, method)


@pytest.mark.parametrize("name, offered", [
    ("hf", None),
    ("openai", {"chat", "completions", "render_template"}),  # render_template where discover() finds it
])
def test_each_backend_implements_exactly_the_methods_of_its_capabilities(name, offered):
    from ladder.backends import backend_classes

    cls = backend_classes()[name]
    assert issubclass(cls, Backend)
    offered = offered or set(cls.capabilities)
    for method in {m for methods in METHODS.values() for m in methods}:
        declared = [c for c, methods in METHODS.items() if method in methods and c in offered]
        assert own(cls, method) == bool(declared), \
            f"{name}: {method} is {'' if own(cls, method) else 'not '}implemented, capabilities {sorted(offered)}"


def test_a_method_the_backend_lacks_raises_missing_capability():
    from ladder.backends.openai import ServedModel

    server = ServedModel(url=ENDPOINT)  # not discovered: chat and completions only
    for call in (lambda: server.render([{"role": "user", "content": "x"}]),
                 lambda: server.rendering([{"role": "user", "content": "x"}]),
                 lambda: server.score([([1], [2])]), lambda: server.network):
        with pytest.raises(MissingCapability):
            call()


class Canned(Backend):
    """A backend that generates and tokenizes, and nothing else."""

    name: ClassVar[str] = "canned"
    capabilities = frozenset({"generate", "tokenize"})

    @staticmethod
    def reaches(case: Any) -> bool:
        return False

    def close(self) -> None:
        pass

    def generate(self, batch, **settings):
        from ladder.backends.contract import require

        require(self, "generate")
        return [[7, 8] for _ in batch]


class DeclaresTokenizeOnly(Probe):
    name = "declares-tokenize-only"
    capabilities = ("tokenize",)

    def run(self, ctx):
        return passed(f"generated {Canned().generate([[1, 2]])}")


class DeclaresGenerate(DeclaresTokenizeOnly):
    name = "declares-generate"
    capabilities = ("tokenize", "generate")


class ScoresOptionally(Probe):
    name = "scores-optionally"
    optional_capabilities = ("logits",)

    def run(self, ctx):
        return passed(f"scored {Canned().score([([1], [2])])}")


def run_one(tmp_path: Path, probe: type[Probe]):
    registry = engine_registry()
    registry.register(probe.name, probe)
    body = (f"name: t\nrungs:\n  - id: r\n    title: r is wrong\n    tier: interface\n    probe: {probe.name}\n"
            "    after: []\n    why: w\n    fix: f\n")
    return Runner(load_ladder(write(tmp_path / "l.yaml", body), registry), Case(), registry=registry).run().rungs[0]


def test_a_probe_using_a_capability_it_did_not_declare_is_an_error(tmp_path):
    result = run_one(tmp_path, DeclaresTokenizeOnly)
    assert result.status is Status.ERROR, result.summary
    assert "used the `generate` capability" in result.summary and "without declaring it" in result.summary
    twin = run_one(tmp_path, DeclaresGenerate)
    assert twin.status is Status.PASS and "[[7, 8]]" in twin.summary


def test_a_capability_the_backend_turns_out_to_lack_is_a_skip_naming_it(tmp_path):
    result = run_one(tmp_path, ScoresOptionally)
    assert result.status is Status.SKIP, result.summary
    assert "`logits`" in result.summary and "canned backend" in result.summary
    assert result.evidence["missing_capabilities"] == ["logits"]


def test_probes_never_hold_the_transformers_objects_themselves():
    """The probes and their shared helpers use the contract's methods, never the hf backend's own fields."""
    import ladder

    root = Path(ladder.__file__).parent
    sources = sorted((root / "probes").glob("*.py")) + [root / "internals.py", root / "harness" / "compare.py"]
    for path in sources:
        text = path.read_text()
        for private in ("hf_model(", "loaded_model", "loaded_tokenizer"):
            assert private not in text, f"{path.name} reaches the model around the contract ({private})"


@pytest.mark.slow
def test_the_hf_backend_through_the_contract():
    from ladder.backends.hf import HFModel
    from ladder.fixtures import models

    hf = HFModel.load(str(models.chat_model_dir("chatml")))
    try:
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        ids = hf.render(messages)
        encoded = hf.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        assert ids == list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        assert hf.detokenize(hf.tokenize("Paris", add_special_tokens=False)) == "Paris"
        reply = hf.generate([ids], max_new_tokens=12)[0]
        assert 0 < len(reply) <= 12
        first = reply[:1]
        cut = hf.generate([ids], max_new_tokens=12, stop_ids=set(first))[0]
        assert cut == first, "a reply ends at the first of the stop ids it is given"
        right = hf.generate([ids, ids[-3:]], max_new_tokens=12, padding_side="right")
        assert len(right) == 2
        scores = hf.score([(ids, reply)])[0]
        assert len(scores) == len(reply) and all(s <= 0 for s in scores)
        values, greedy = hf.greedy_agreement([(ids, reply), (ids, [reply[0] + 1])])
        assert greedy[0] == [True] * len(reply), "ladder's own greedy reply is top-1 at every token"
        assert greedy[1] == [False] and values[0] == pytest.approx(scores, abs=1e-3)
        with pytest.raises(MissingCapability):
            hf.chat(messages, max_tokens=4)
    finally:
        hf.close()


@pytest.mark.slow
def test_a_model_whose_activations_outweigh_the_budget_is_run_in_slices_with_the_same_results(monkeypatch):
    """A pass's activations stay within a share of the weights: generate slices the prompt's prefill
    (`prefill_chunk_size`), scoring runs a few rows at a time. Forced here with a budget of a few tokens: the
    replies and the scores are those of the single pass."""
    import torch

    from ladder.backends.hf import HFModel
    from ladder.fixtures import models
    from ladder.internals import decoder_layers, probe_batch
    from ladder.probes.degeneration import free_run

    hf = HFModel.load(str(models.chat_model_dir("chatml")))
    try:
        prompts = [hf.render([{"role": "user", "content": f"What is {a} plus {b}?"}]) for a, b in ((1, 2), (3, 5), (7, 1))]
        prompts.append(hf.tokenize("What is 4 plus"))
        whole = hf.generate(prompts, max_new_tokens=8)
        free, _, free_logits = free_run(hf, prompts, 8)
        pairs = [(p, r) for p, r in zip(prompts, whole) if r]
        scores, greedy = hf.greedy_agreement(pairs)
        assert hf.tokens_per_pass() >= 8192, "a fixture model's prompts fit one pass"
        batch = probe_batch(hf, ["What is 1 plus 2?", "Name a colour.", "What is 7 plus 1?"])
        with torch.no_grad():
            whole_logits = hf.network(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        monkeypatch.setattr(HFModel, "ACTIVATION_FLOOR", 0)
        monkeypatch.setattr(HFModel, "ACTIVATION_SHARE", 1e-5)
        assert hf.tokens_per_pass() < len(prompts[0])
        assert hf.generate(prompts, max_new_tokens=8) == whole
        assert hf.prefill_options(hf.padded(prompts)[0]), "the prompts' prefill is sliced"
        seen, plain = [], hf.network.generate
        monkeypatch.setattr(hf.network, "generate", lambda **kw: seen.append(kw) or plain(**kw))
        sliced_free, _, sliced_logits = free_run(hf, prompts, 8)  # degeneration's own generate call
        assert seen[0].get("prefill_chunk_size"), "degeneration's prefill is sliced too"
        assert sliced_free == free
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(sliced_logits, free_logits))
        # a probe's own forward pass (internals rungs): each MLP runs a few tokens at a time, the same logits;
        # a lent harness's path is left whole
        network, batch = hf.network, probe_batch(hf, ["What is 1 plus 2?", "Name a colour.", "What is 7 plus 1?"])
        mlp_calls = []
        decoder_layers(network)[1][0].mlp.down_proj.register_forward_hook(lambda *_: mlp_calls.append(1))
        with torch.no_grad():
            sliced_logits = network(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            assert len(mlp_calls) > 1 and torch.allclose(sliced_logits, whole_logits, atol=1e-4)
            mlp_calls.clear()
            with hf.unsliced():
                network(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            assert len(mlp_calls) == 1
        sliced_scores, sliced_greedy = hf.greedy_agreement(pairs)
        assert sliced_greedy == greedy
        assert all(a == pytest.approx(b, abs=1e-4) for a, b in zip(sliced_scores, scores))
    finally:
        hf.close()


@pytest.mark.slow
def test_no_builtin_probe_uses_a_capability_it_does_not_declare():
    """The whole default ladder on two cases that reach every probe's model path: no rung errs."""
    from ladder.case import load_case
    from ladder.fixtures import cases

    for name in ("healthy", "frankenmerge"):
        case = load_case(str(cases.build_case(name) / "case.yaml"))
        report = Runner(load_ladder(), case, keep_going=True).run()
        errors = [(r.id, r.summary) for r in report.rungs if r.status is Status.ERROR]
        assert not errors, errors
        assert sum(r.status in (Status.PASS, Status.FAIL, Status.WARN) for r in report.rungs) >= 8, name


@contextlib.contextmanager
def cost_counter():
    """The cost the calls inside the block count, as a rung's `evidence.cost` would."""
    from ladder.probes.base import running_rung

    running_rung.cost = {}
    try:
        yield running_rung.cost
    finally:
        del running_rung.cost


def test_scores_of_a_generated_reply_come_from_the_generation_and_equal_a_forward_pass():
    """`score` of a reply `generate` just produced (or a prefix of it) is read off the generation's own
    logits; the values are the teacher-forced pass's, and a temporary hook on the network (layers bypassed,
    blocks cast) makes them be computed afresh."""
    from ladder.backends.hf import HFModel
    from ladder.fixtures import models

    def halve(_module, _args, output):
        return (output[0] * 0.5, *output[1:]) if isinstance(output, tuple) else output * 0.5

    hf = HFModel.load(str(models.chat_model_dir("chatml")))
    try:
        prompts = [hf.render([{"role": "user", "content": q}]) for q in ("What is 3+4?", "What is 21+9?", "Hi")]
        replies = hf.generate(prompts, max_new_tokens=10)
        pairs = list(zip(prompts, replies)) + [(prompts[0], replies[0][:1])]
        with cost_counter() as cost:
            remembered = hf.score(pairs)
        assert cost.get("forward_passes", 0) == 0
        fresh, _ = hf.greedy_agreement(pairs)
        for a, b in zip(remembered, fresh):
            assert a == pytest.approx(b, abs=1e-3)
        handle = hf.network.model.layers[0].register_forward_hook(halve)
        try:
            with cost_counter() as cost:
                changed = hf.score(pairs[:1])
            assert cost.get("forward_passes", 0) == 1
            assert changed[0] != pytest.approx(remembered[0], abs=1e-3)
        finally:
            handle.remove()
        other = [replies[0][0] + 1]
        with cost_counter() as cost:
            hf.score([(prompts[0], other)])
        assert cost.get("forward_passes", 0) == 1, "a continuation the model did not generate is scored"
    finally:
        hf.close()


def test_greedy_replies_are_generated_once_and_shared_at_any_length():
    """The rungs that ask for the same prompts' greedy replies (the template path: prompt-format,
    generation-config, harness-control, special-tokens) share one generation: a shorter limit reads the
    first tokens, a longer one continues the reply instead of generating it again, and a temporary hook on the
    network makes them be generated afresh. The replies are generate's."""
    from ladder.backends.hf import HFModel
    from ladder.fixtures import models

    hf = HFModel.load(str(models.chat_model_dir("chatml")))
    try:
        # templated prompts stop after a short answer; raw text runs on (a reply to continue)
        prompts = [hf.render([{"role": "user", "content": q}]) for q in ("What is 3+4?", "Hi")] + \
            [hf.tokenize("What is 21+9? The sum")]
        stops = hf.stop_ids()
        full = hf.generate(prompts, max_new_tokens=24, stop_ids=stops)
        hf.generated_scores.clear()
        assert any(len(reply) > 6 for reply in full), "a reply long enough to be continued"
        with cost_counter() as cost:
            short = hf.greedy_replies(prompts, max_new_tokens=6, stop_ids=stops)
        assert cost.get("generate_calls") == 1
        assert short == [reply[:6] for reply in full]
        with cost_counter() as cost:
            again = hf.greedy_replies(prompts, max_new_tokens=4, stop_ids=stops)
            assert hf.score(list(zip(prompts, again)))
        assert cost == {}, "read off the first generation: no pass at all"
        assert again == [reply[:4] for reply in full]
        with cost_counter() as cost:
            longer = hf.greedy_replies(prompts, max_new_tokens=24, stop_ids=stops)
            hf.score(list(zip(prompts, longer)))
        assert cost.get("generate_calls") == 1 and cost.get("forward_passes", 0) < 24, cost
        assert longer == full
        hf.generated_scores.clear()  # a scored continuation: its greedy start is a reply too
        other = full[2][:3] + [full[2][3] + 1]
        with cost_counter() as cost:
            hf.greedy_agreement([(prompts[0], full[0]), (prompts[2], other)])
            hf.score([(prompts[0], full[0][:2]), (prompts[2], other)])
            assert hf.greedy_replies(prompts[:1], max_new_tokens=24, stop_ids=stops) == full[:1]
        assert cost == {"forward_passes": 1}, cost
        with cost_counter() as cost:
            assert hf.greedy_replies(prompts[2:], max_new_tokens=6, stop_ids=stops) == [full[2][:6]]
        assert cost.get("generate_calls") == 1, "continued after the scored continuation's greedy start"
        handle = hf.network.model.layers[0].register_forward_hook(lambda _m, _a, output: output)
        try:
            with cost_counter() as cost:
                hf.greedy_replies(prompts, max_new_tokens=4, stop_ids=stops)
            assert cost.get("generate_calls") == 1, "another state of the network: generated afresh"
        finally:
            handle.remove()
    finally:
        hf.close()


def test_replies_under_settings_that_change_the_top_1_are_not_remembered_as_greedy(tmp_path):
    """A checkpoint whose generation_config.json asks for a repetition penalty, no repeated n-grams and
    suppressed tokens (Qwen2.5-Instruct ships a penalty): ladder's replies keep those settings, as a server
    serving the checkpoint does, but are not remembered as the model's greedy replies (their tokens are not
    all its top-1); degeneration's free run, which measures the model itself, is the plain checkpoint's."""
    import json
    import shutil

    import torch

    from ladder.backends.hf import HFModel
    from ladder.fixtures import models
    from ladder.probes.degeneration import free_run

    source = models.looping_model_dir("chatml")  # replies that repeat: a penalty changes them
    asking = tmp_path / "asking"
    shutil.copytree(source, asking)
    config = json.loads((asking / "generation_config.json").read_text())
    config.update(repetition_penalty=3.0, no_repeat_ngram_size=2, suppress_tokens=[5], min_new_tokens=4)
    (asking / "generation_config.json").write_text(json.dumps(config))
    plain, hf = HFModel.load(str(source)), HFModel.load(str(asking))
    try:
        prompts = [hf.render([{"role": "user", "content": q}]) for q in ("What is 3 plus 3?", "What is 2 plus 7?")]
        replies = hf.generate(prompts, max_new_tokens=16, stop_ids=hf.stop_ids())
        with torch.no_grad():  # the checkpoint's settings, as transformers applies them
            asked = hf.loaded_model.generate(input_ids=torch.tensor(prompts[:1]), max_new_tokens=16)
        assert replies[0] == asked[0, len(prompts[0]):].tolist()[:len(replies[0])]
        assert replies != plain.generate(prompts, max_new_tokens=16, stop_ids=plain.stop_ids())
        assert not hf.generated_scores, "not the model's greedy replies: nothing remembered"
        _, hits = hf.greedy_agreement(list(zip(prompts, replies)))
        assert not all(all(row) for row in hits)
        assert plain.generated_scores, "the plain checkpoint's replies are remembered"
        assert free_run(hf, prompts, 16)[0] == free_run(plain, prompts, 16)[0]
    finally:
        plain.close()
        hf.close()


def test_degeneration_reads_its_free_run_off_replies_the_run_already_generated():
    """degeneration's greedy replies and per-step entropy on the template path's prompts are the ones an
    earlier rung generated (generation-config's, 64 tokens): no pass at all, the same figures as generating
    them; a remembered reply too short for degeneration's limit, stopped on nothing, is generated."""
    from ladder.backends.hf import HFModel
    from ladder.fixtures import models
    from ladder.probes.degeneration import generate_with_entropy

    hf = HFModel.load(str(models.chat_model_dir("chatml")))
    try:
        templated = [hf.render([{"role": "user", "content": q}]) for q in ("What is 3+4?", "Hi", "Add 9 and 4.")]
        stops = hf.stop_ids()
        hf.generate(templated, max_new_tokens=64, stop_ids=stops)
        with cost_counter() as cost:
            read = generate_with_entropy(hf, templated, 48)
        assert cost == {}, cost
        hf.generated_scores.clear()
        fresh = generate_with_entropy(hf, templated, 48)
        assert read[:2] == fresh[:2]
        assert read[2] == pytest.approx(fresh[2], abs=1e-4)
        raw = [hf.tokenize("What is 21+9? The sum")]  # runs on: 8 remembered tokens are not a 48-token reply
        hf.generate(raw, max_new_tokens=8, stop_ids=stops)
        with cost_counter() as cost:
            replies, _, _ = generate_with_entropy(hf, raw, 48)
        assert cost.get("forward_passes", 0) > 0 and len(replies[0]) > 8
    finally:
        hf.close()
