"""The CLI as a user runs it: reports, exit codes, plugins, bad input, light imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from helpers import run_cli, write
from ladder.report import SCHEMA_PATH

HERE = Path(__file__).parent


@pytest.fixture
def plugin_site(tmp_path):
    """A real installed distribution registering probes through the `ladder.probes` entry points."""
    site = tmp_path / "site"
    dist = site / "engine_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: engine-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[ladder.probes]\nfile-check = engine_probes:FileCheck\nneeds-data = engine_probes:NeedsData\n"
        "broken-probe = engine_plugin_missing_module:Probe\n")
    shutil.copy(HERE / "engine_probes.py", site / "engine_probes.py")
    return site


def plugin_env(site: Path, **extra: str) -> dict:
    return {"PYTHONPATH": str(site), **extra}


def test_ladder(tmp_path, good: bool, probe: str = "file-check") -> Path:
    target = tmp_path / ("good.txt" if good else "empty.txt")
    target.write_text("x" if good else "")
    return write(tmp_path / "l.yaml", f"""
        name: cli-test
        rungs:
          - id: first
            title: the file is empty
            tier: interface
            probe: {probe}
            params: {{path: {target}}}
            why: an empty file holds nothing
            fix: write something into it
          - id: second
            title: data missing
            tier: data
            probe: needs-data
            after: [first]
            why: w
            fix: f
        """)


test_ladder.__test__ = False  # a helper, not a test


def test_probe_writes_json_junit_markdown_and_exits_1_on_culprit(tmp_path, plugin_site):
    ladder = test_ladder(tmp_path, good=False)
    result = run_cli("probe", "--ladder", str(ladder), "--json", "r.json", "--junit", "r.xml", "--md", "r.md",
                     cwd=tmp_path, env=plugin_env(plugin_site))
    assert result.returncode == 1, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert report["schema"] == "ladder.report/1"
    assert report["culprit"]["rung"] == "first"
    assert [(r["id"], r["status"]) for r in report["rungs"]] == [("first", "fail"), ("second", "blocked")]
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"
    assert suite.find("testcase[@name='first']/failure") is not None
    markdown = (tmp_path / "r.md").read_text()
    assert "**Culprit: `first`**" in markdown and "write something into it" in markdown
    assert "Culprit:" in result.stdout and "first" in result.stdout


def test_probe_exits_0_without_culprit(tmp_path, plugin_site):
    ladder = test_ladder(tmp_path, good=True)
    result = run_cli("probe", "--ladder", str(ladder), "--data", ".", "--json", "r.json", cwd=tmp_path,
                     env=plugin_env(plugin_site))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["culprit"] is None
    assert report["case"]["data"] == str(tmp_path)  # flag paths are relative to the working directory


def test_case_file_paths_are_relative_to_the_file(tmp_path, plugin_site):
    ladder = test_ladder(tmp_path, good=True)
    (tmp_path / "case" / "train").mkdir(parents=True)
    write(tmp_path / "case" / "ladder.case.yaml", "data: train\n")
    result = run_cli("probe", "case/ladder.case.yaml", "--ladder", str(ladder), "--json", "r.json",
                     cwd=tmp_path, env=plugin_env(plugin_site))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["case"]["data"] == str(tmp_path / "case" / "train")


def test_secrets_never_reach_reports(tmp_path, plugin_site):
    ladder = test_ladder(tmp_path, good=False)
    secret = "sk-live-0123456789abcdefSECRET"
    write(tmp_path / "case.yaml", f"description: key {secret} and hf_abcdefghijklmnopqrstuvwx\n")
    result = run_cli("probe", "case.yaml", "--ladder", str(ladder), "--json", "r.json", "--md", "r.md",
                     "--junit", "r.xml", cwd=tmp_path, env=plugin_env(plugin_site, OPENAI_API_KEY=secret))
    assert result.returncode == 1, result.stderr
    for name in ("r.json", "r.md", "r.xml"):
        text = (tmp_path / name).read_text()
        assert secret not in text and "hf_abcdefghijklmnopqrstuvwx" not in text and "***" in text


def test_the_redactor_masks_credentials_not_evidence_about_tokens(tmp_path, plugin_site):
    from ladder.report import REDACTED, redact

    evidence = {"versions": {"tokenizers": "0.22.1"}, "bos_token": "<s>", "eos_token": "</s>",
                "special_tokens": ["<s>", "</s>"], "pad_token_id": 0, "max_new_tokens": 16, "key": "save_steps",
                "tokenizer": "the checkpoint's own"}
    secrets = {"token": "abc123", "api_key": "k-1", "OPENAI_API_KEY": "k-2", "hf_token": "k-3", "password": "pw"}
    masked = redact({**evidence, **secrets, "nested": [{"access_token": "k-4", "bos_token": "<s>"}]})
    assert {k: masked[k] for k in evidence} == evidence
    assert all(masked[k] == REDACTED for k in secrets)
    assert masked["nested"] == [{"access_token": REDACTED, "bos_token": "<s>"}]
    # end to end: the JSON report keeps the versions of tokenizers and transformers
    ladder = test_ladder(tmp_path, good=True)
    write(tmp_path / "case.yaml", "description: versions\n")
    result = run_cli("probe", "case.yaml", "--ladder", str(ladder), "--json", "r.json", cwd=tmp_path,
                     env=plugin_env(plugin_site))
    versions = json.loads((tmp_path / "r.json").read_text())["versions"]
    assert REDACTED not in json.dumps(versions), (result.stderr, versions)


def test_plugins_listed_broken_one_reported_not_fatal(tmp_path, plugin_site):
    result = run_cli("probes", env=plugin_env(plugin_site))
    assert result.returncode == 0
    assert "file-check" in result.stdout and "engine-plugin" in result.stdout
    ladder = test_ladder(tmp_path, good=True, probe="broken-probe")
    result = run_cli("validate", str(ladder), env=plugin_env(plugin_site))
    assert result.returncode == 2
    assert "probe 'broken-probe' from engine-plugin failed to load: ModuleNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("switch", ["--no-plugin", "env"])
def test_plugins_can_be_turned_off(tmp_path, plugin_site, switch):
    ladder = test_ladder(tmp_path, good=True)
    args = ["validate", str(ladder)] + (["--no-plugin", "engine-plugin"] if switch == "--no-plugin" else [])
    env = plugin_env(plugin_site, **({"LADDER_DISABLE_PLUGIN_AUTOLOAD": "1"} if switch == "env" else {}))
    on = run_cli("validate", str(ladder), env=plugin_env(plugin_site))
    off = run_cli(*args, env=env)
    assert on.returncode == 0, on.stderr
    assert off.returncode == 2 and "unknown probe 'file-check'" in off.stderr


BAD_INPUTS = {
    "missing case file": (["probe", "nope.yaml"], "case file not found"),
    "case file is a directory": (["probe", "adir"], "is a directory"),
    "empty case file": (["probe", "empty.yaml"], "is empty"),
    "case not a mapping": (["probe", "list.yaml"], "must be a YAML mapping"),
    "malformed case yaml": (["probe", "broken.yaml"], "broken.yaml:2:1: malformed YAML"),
    "unknown case key": (["probe", "typo.yaml"], "unknown key 'modle' (did you mean 'model'?)"),
    "model path missing": (["probe", "--model", "no/such/model"], "model: " ),
    "hub id not in the local cache": (["probe", "--model", "acme/not-cached"], "read from the local hub cache only"),
    "harness file missing": (["probe", "--harness", "nothere.py:run"], "nothere.py does not exist"),
    "harness without function": (["probe", "--harness", "h.py"], "must be FILE.py:NAME"),
    "empty harness-cmd": (["probe", "--harness-cmd", " "], "harness-cmd is empty"),
    "json output is a directory": (["probe", "--json", "adir"], "is a directory"),
    "report in a folder that cannot be written": (["probe", "--md", "/proc/r.md"], "cannot write in folder /proc"),
    "unknown ladder file": (["rules", "--ladder", "missing.yaml"], "ladder not found"),
    "validate a directory": (["validate", "adir"], "is a directory"),
    "explain unknown rung": (["explain", "prompt-fromat"], "no rung 'prompt-fromat'"),
    "bad flag value": (["probe", "--expect-samples", "many"], "invalid int value"),
    "unknown dtype": (["probe", "--dtype", "half"], "dtype"),
    "unknown device": (["probe", "--device", "tpu"], "device"),
    "non-utf8 ladder": (["validate", "latin1.yaml"], "not UTF-8"),
    "binary case file": (["probe", "nul.yaml"], "is not YAML text"),
    "transcript line not JSON": (["probe", "--transcript", "bad.jsonl"], "bad.jsonl:2: not JSON"),
    "transcript of chat messages only": (["probe", "--transcript", "chat.jsonl"], "chat.jsonl:1: holds chat `messages`"),
}


def test_a_hub_id_in_the_local_cache_is_its_snapshot_folder(tmp_path):
    """`model: org/name`, not a folder here: the snapshot the local hub cache holds (never fetched)."""
    snapshot = tmp_path / "hub" / "models--acme--tiny-chat" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs" / "main").write_text("abc123")
    (tmp_path / "case.yaml").write_text("model: acme/tiny-chat\n")
    code = "from ladder.case import load_case; print(load_case('case.yaml').model)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == snapshot.resolve()


def test_a_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from ladder.report import writers

    path = tmp_path / "r.json"
    path.write_text("the previous report")

    def broken(report):
        raise RuntimeError("rendering failed")

    monkeypatch.setitem(writers.WRITERS, "json", broken)
    with pytest.raises(RuntimeError):
        writers.write_report(object(), "json", path)
    assert path.read_text() == "the previous report" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    monkeypatch.setitem(writers.WRITERS, "json", lambda report: "the new report")
    writers.write_report(object(), "json", path)
    assert path.read_text() == "the new report" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_a_message(tmp_path, name):
    (tmp_path / "adir").mkdir()
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "list.yaml").write_text("- a\n")
    (tmp_path / "broken.yaml").write_text("model: [x\n")
    (tmp_path / "typo.yaml").write_text("modle: x\n")
    (tmp_path / "h.py").write_text("def run(p):\n    return p\n")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "nul.yaml").write_bytes(b"a\x00b: 1\n")
    (tmp_path / "bad.jsonl").write_text('{"input": "Hi", "output": "Hello"}\n{not json\n')
    (tmp_path / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "Hi"}], "response": "Hello"}\n')
    args, message = BAD_INPUTS[name]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_rules_validate_do_not_import_torch():
    code = ("import sys, contextlib, io\n"
            "from ladder.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for args in (['rules'], ['validate'], ['explain', sys.argv[1]] if sys.argv[1] else ['rules']):\n"
            "        assert main(args) == 0, args\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers', 'textual') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    from ladder.loader import load_ladder

    first = load_ladder().order[0] if load_ladder().order else ""
    result = subprocess.run([sys.executable, "-c", code, first], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    help_run = subprocess.run([sys.executable, "-c", "import sys\nfrom ladder.cli import main\n"
                               "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                               "print('torch' in sys.modules, 'pydantic' in sys.modules)"],
                              capture_output=True, text=True, timeout=60)
    assert help_run.stdout.strip().endswith("False False")


def test_schema_commands_print_json():
    for what in ("ladder", "case", "report"):
        result = run_cli("schema", what)
        assert result.returncode == 0
        assert json.loads(result.stdout)["type"] == "object"


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_writes_partial_reports_and_exits_130(tmp_path, plugin_site, signal_name):
    import os
    import signal
    import time

    good = tmp_path / "good.txt"
    good.write_text("x")
    ladder = write(tmp_path / "l.yaml", f"""
        name: slow
        rungs:
          - id: quick
            title: q
            tier: interface
            probe: file-check
            params: {{path: {good}}}
            why: w
            fix: f
          - id: slow
            title: s
            tier: data
            probe: file-check
            params: {{path: {good}, sleep: 30}}
            why: w
            fix: f
        """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(plugin_site)}
    # started with SIGINT ignored, as a background job of a shell script is: `kill -INT` must still stop it
    proc = subprocess.Popen([sys.executable, "-m", "ladder", "probe", "--ladder", str(ladder), "--json", "r.json",
                             "--md", "r.md", "--junit", "r.xml"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    first_line = proc.stderr.readline()  # the display prints each finished rung to stderr
    assert "quick" in first_line, first_line
    time.sleep(0.5)  # the slow rung is running now
    proc.send_signal(getattr(signal, signal_name))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True and report["complete"] is False
    assert "**Interrupted:**" in (tmp_path / "r.md").read_text()
    assert 'name="ladder.interrupted" value="true"' in (tmp_path / "r.xml").read_text()
    assert [(r["id"], r["status"]) for r in report["rungs"]] == [("quick", "pass"), ("slow", "not-run")]
    assert "Traceback" not in err


def test_piped_output_is_120_columns_wide_unless_columns_is_set(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = run_cli("rules").stdout.splitlines()
    assert max(len(line) for line in piped) == 120  # a CI log, not an 80-column terminal
    narrow = run_cli("rules", env={"COLUMNS": "90"}).stdout.splitlines()
    assert max(len(line) for line in narrow) == 90


def _printed_summary(evidence: dict) -> str:
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from ladder.cli_output import RunDisplay
    from ladder.models import Culprit, Report, RungResult

    rung = RungResult(id="prompt-format", tier="interface", title="t", status="fail", summary="raw text",
                      evidence=evidence)
    report = Report(culprit=Culprit(rung="prompt-format", summary="raw text"), rungs=[rung])
    out = io.StringIO()
    RunDisplay(out=Console(file=out, width=120), err=Console(file=io.StringIO())).summary(
        report, SimpleNamespace(name="default"))
    return out.getvalue()


def test_culprit_evidence_is_printed_side_by_side():
    printed = _printed_summary({"side_by_side": {
        "prompt": "What is 2 plus 3?", "harness_sent": "What is 2 plus 3?",
        "template_sends": "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>", "harness_answer": "t 8asst",
        "template_answer": "5"}})
    assert "prompt: What is 2 plus 3?" in printed
    header = next(line for line in printed.splitlines() if "harness" in line and "template" in line)
    answers = next(line for line in printed.splitlines() if "answer" in line)
    assert header.index("harness") < header.index("template")
    assert answers.index("t 8asst") < answers.index("5 ")  # each answer under its own side
    assert "[/" not in printed and "<|im_start|>user" in printed  # text, not markup


def test_culprit_without_side_by_side_prints_no_table():
    assert "side by side" not in _printed_summary({"counts": {"a": 1}})
