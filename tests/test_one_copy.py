"""One copy of the weights: an in-process harness that loads the case's model the way ladder did is handed
ladder's instance (one load in the run); one that loads it otherwise keeps its own; one that changes the
instance it was lent leaves ladder a fresh copy, and the verdicts are those of the unshared run."""

from __future__ import annotations

import contextlib
import textwrap

import pytest

from interface_models import chat_model_dir, rung, rungs_runner

pytestmark = pytest.mark.slow

HARNESS = '''
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

_tok = AutoTokenizer.from_pretrained({model!r})
_model = AutoModelForCausalLM.from_pretrained({model!r}{load})
{after_load}
open({id_file!r}, "w").write(str(id(_model)))


def ask(prompt):
    ids = _tok(prompt, return_tensors="pt")["input_ids"].to(_model.device)
    with torch.no_grad():
        out = _model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                              {options})
    return _tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
'''


def run_with(tmp_path, load: str = "", after_load: str = "", options: str = "do_sample=False"):
    model = chat_model_dir("chatml")
    id_file = tmp_path / "harness_model_id"
    path = tmp_path / "harness.py"
    path.write_text(textwrap.dedent(HARNESS).format(model=str(model), load=load, after_load=after_load,
                                                    id_file=str(id_file), options=options), encoding="utf-8")
    runner = rungs_runner(tmp_path / "case", ["load-report", "prompt-format"], model=model, harness=f"{path}:ask")
    runner.walk(runner.ladder.order, stop_at_fail=False)  # not `run()`, which closes the resources inspected here
    try:
        loads = runner.resources.peek("harness:calls").model_loads()
        ladders = runner.resources.peek("hf:model").loaded_model
        return runner.report(), runner, loads, int(id_file.read_text()), ladders
    finally:
        runner.resources.close()


def test_a_harness_loading_the_model_as_ladder_did_is_handed_ladders_instance(tmp_path):
    report, runner, loads, harness_model, ladders = run_with(tmp_path, load=", dtype='auto'")
    assert runner.resources.builds["hf:model"] == 1
    assert sum(r.evidence.get("cost", {}).get("model_loads", 0) for r in report.rungs) == 1  # as the JSON says
    assert harness_model == id(ladders)
    assert [load.get("lent_by_ladder") for load in loads] == [True]
    assert rung(report, "load-report").status.value == "pass", rung(report, "load-report").summary
    assert rung(report, "load-report").evidence["harness_shared_ladders_copy"] is True
    assert rung(report, "prompt-format").status.value == "fail"  # raw text: the founding case, shared or not


@contextlib.contextmanager
def remembered_harness_replies(tmp_path, options):
    """After load-report ran the harness on ladder's instance: the instance and, per harness call, its prompt
    ids, what the instance remembers after that prompt (None: nothing) and the harness's own reply ids."""
    model = chat_model_dir("chatml")
    path = tmp_path / "harness.py"
    path.write_text(textwrap.dedent(HARNESS).format(model=str(model), load="", after_load="",
                                                    id_file=str(tmp_path / "harness_model_id"), options=options),
                    encoding="utf-8")
    runner = rungs_runner(tmp_path / "case", ["load-report"], model=model, harness=f"{path}:ask")
    runner.walk(runner.ladder.order, stop_at_fail=False)
    try:
        hf, run = runner.resources.peek("hf:model"), runner.resources.peek("harness:calls")
        assert [load.get("lent_by_ladder") for load in run.model_loads()] == [True]
        records = [call["generate"][0] for call in run.calls]
        yield hf, [(r["input_ids"][0], hf._kept(r["input_ids"][0]), r["output_ids"][0]) for r in records]
    finally:
        runner.resources.close()


def test_a_lent_instance_remembers_the_harness_greedy_replies_as_its_own(tmp_path):
    """The harness's greedy generate on ladder's instance is watched: each reply is remembered with its
    log-probabilities (those a teacher-forced pass gives) and entropies, so ladder's rungs continue it instead
    of generating the same reply again."""
    from ladder.backends.hf import cut_at_stop

    with remembered_harness_replies(tmp_path, "do_sample=False") as (hf, seen):
        assert seen and all(known is not None for _, known, _ in seen), "every greedy reply is remembered"
        eos = hf.loaded_model.generation_config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos])
        for _, known, produced in seen:
            reply = cut_at_stop(produced, stops)
            assert list(known.continuation) == reply and all(known.hits) and len(known.entropy) == len(reply)
        forced, greedy = hf._teacher_forced([(prompt, list(known.continuation)) for prompt, known, _ in seen])
        for (_, known, _), values, hits in zip(seen, forced, greedy):
            assert all(hits) and max(abs(a - b) for a, b in zip(values, known.logprobs)) < 1e-3


def test_a_sampling_harness_is_not_remembered_as_greedy(tmp_path):
    with remembered_harness_replies(tmp_path, "do_sample=True, temperature=1.5, top_k=0") as (_, seen):
        assert seen and all(known is None for _, known, _ in seen)


def test_a_harness_placing_the_model_where_ladders_lies_is_handed_ladders_instance(tmp_path):
    """`device_map="auto"` (the usual line of a GPU script) puts the model where ladder's lies, here the CPU."""
    report, runner, loads, harness_model, ladders = run_with(tmp_path, load=", device_map='auto'")
    assert harness_model == id(ladders) and [load.get("lent_by_ladder") for load in loads] == [True]
    assert rung(report, "load-report").status.value == "pass", rung(report, "load-report").summary


def test_a_device_map_names_the_one_device_the_model_lies_on(monkeypatch):
    import torch

    from ladder.backends.hf import device_placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert [device_placement(v) for v in (None, "auto", "cpu", {"": "cpu"}, torch.device("cpu"))] == ["cpu"] * 5
    assert device_placement({"model.embed_tokens": 0, "lm_head": "cpu"}) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert [device_placement(v) for v in ("auto", "cuda", 0, "cuda:0", {"": 0})] == ["cuda:0"] * 5
    assert device_placement(None) == "cpu" and device_placement("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_placement("auto") is None, "two GPUs: auto may shard the model over both"


def test_a_harness_loading_another_dtype_keeps_its_own_copy(tmp_path):
    report, runner, loads, harness_model, ladders = run_with(tmp_path, load=", dtype=torch.float16")
    assert harness_model != id(ladders)
    assert not any(load.get("lent_by_ladder") for load in loads)
    assert rung(report, "load-report").evidence["harness_shared_ladders_copy"] is False
    dtypes = rung(report, "load-report").evidence["dtype"]
    assert dtypes["in_memory_harness"] == ["torch.float16"] and dtypes["in_memory_ladder"] == "torch.float32"


def test_a_harness_that_changes_its_lent_model_leaves_ladder_a_fresh_copy(tmp_path):
    report, runner, loads, harness_model, ladders = run_with(tmp_path, after_load="_model.half()")
    assert [load.get("lent_by_ladder") for load in loads] == [True]
    assert runner.resources.builds["hf:model"] == 2 and id(ladders) != harness_model
    assert str(ladders.dtype) == "torch.float32"
    dtypes = rung(report, "load-report").evidence["dtype"]
    assert dtypes["in_memory_harness"] == ["torch.float16"] and dtypes["in_memory_ladder"] == "torch.float32"
    assert not any(r.status.value == "error" for r in report.rungs), [(r.id, r.summary) for r in report.rungs]


def test_the_harness_run_reports_progress_with_counts(tmp_path):
    """Long work says how far it is: the harness loop reports `prompt k/n` to the CLI and the TUI."""
    from ladder.events import RungProgress
    from ladder.harness import DEFAULT_PROMPTS

    harness = tmp_path / "harness.py"
    harness.write_text("def ask(prompt):\n    return 'no model here'\n", encoding="utf-8")
    runner = rungs_runner(tmp_path / "case", ["prompt-format"], model=chat_model_dir("chatml"),
                          harness=f"{harness}:ask")
    messages = []
    runner.on_event = lambda event: messages.append(event.message) if isinstance(event, RungProgress) else None
    runner.run()
    total = len(DEFAULT_PROMPTS)
    counted = [m for m in messages if m.startswith("your harness: prompt ")]
    assert counted == [f"your harness: prompt {k}/{total}" for k in range(1, total + 1)], messages


def test_generation_and_scoring_report_progress_with_counts(tmp_path):
    """ladder's own generations count their tokens within the phase the rung names (`running the model both
    ways: token 5/24`), and memorization counts the samples it scored."""
    import json

    from interface_models import variant_harness

    from ladder.events import RungProgress

    rows = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                          {"role": "assistant", "content": str(a + b)}]} for a in range(4) for b in range(4)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    model = chat_model_dir("chatml")
    runner = rungs_runner(tmp_path / "case", ["prompt-format", "memorization"], model=model, data=data,
                          eval_data=data, harness=variant_harness(tmp_path / "harness", model, mode="raw"))
    messages = []
    runner.on_event = lambda event: messages.append(event.message) if isinstance(event, RungProgress) else None
    report = runner.run()
    assert rung(report, "prompt-format").status.value == "fail"
    tokens = [int(m.split(" ")[-1].split("/")[0]) for m in messages
              if m.startswith("running the model both ways: token ") and m.endswith("/24")]
    assert tokens[:3] == [1, 2, 3] and max(tokens) <= 24, str(tokens)
    scored = [m for m in messages if ": scored " in m]
    assert scored == ["training samples: scored 8/16", "training samples: scored 16/16",
                      "held-out samples: scored 8/16", "held-out samples: scored 16/16"], messages


def test_harness_control_lends_the_base_to_the_harness_it_redirects(tmp_path):
    from interface_models import base_model_dir, probe_prompts, variant_harness

    model = chat_model_dir("chatml")
    runner = rungs_runner(tmp_path / "case", ["harness-control"], model=model, base=base_model_dir(),
                          harness=variant_harness(tmp_path / "harness", model, mode="raw"),
                          prompts=probe_prompts(8))
    runner.walk(runner.ladder.order, stop_at_fail=False)
    try:  # raw text hurts the fine-tune, so the control runs the base through the same path
        loads = runner.resources.peek("harness:calls:base").model_loads()
        assert [(bool(load["redirected_to"]), load.get("lent_by_ladder")) for load in loads] == [(True, True)]
        assert runner.resources.builds["hf:base"] == 1
        assert runner.results["harness-control"].status.value == "pass", runner.results["harness-control"].summary
    finally:
        runner.resources.close()


def test_only_rows_that_are_their_prompts_greedy_replies_are_remembered():
    """A right-padded row's reply is not its prompt's (the pads sit between prompt and reply); a row whose
    token is not the step's top-1 was not decoded greedily; the reply ends at the call's eos."""
    from ladder.backends.hf import GreedyWatch

    kept = []

    class Lender:
        def _remember(self, prompt, reply, values, hits, replace, entropy):
            kept.append((prompt, reply, values))

    watch = GreedyWatch(Lender(), eos={2})
    watch.steps = [([5, 7, 9, 4], [-0.1, -0.2, -0.3, -0.4], [1.0] * 4),
                   ([2, 8, 9, 4], [-0.5, -0.6, -0.7, -0.8], [1.0] * 4)]
    watch.remember({"input_ids": [[0, 11, 12], [11, 12, 0], [11, 12, 13], [11, 12, 14]],
                    "attention_mask": [[0, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]],
                    "output_ids": [[5, 2], [7, 8], [6, 9], [4, 4]]})
    assert kept == [([11, 12], [5, 2], [-0.1, -0.5]), ([11, 12, 14], [4, 4], [-0.4, -0.8])]


def test_a_watch_that_fails_leaves_the_call_recorded(tmp_path, monkeypatch):
    from ladder.backends.hf import GreedyWatch

    def broken(self, record):
        raise RuntimeError("watch failed")

    monkeypatch.setattr(GreedyWatch, "remember", broken)
    with remembered_harness_replies(tmp_path, "do_sample=False") as (_, seen):
        assert seen and all(known is None and produced for _, known, produced in seen)
