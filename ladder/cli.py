"""`ladder`: the command line.

Exit status: 0 no culprit found, 1 a culprit found, 2 bad input (a message, no
traceback), 3 an internal or probe error left the answer incomplete, 130 interrupted.
Only `probe`, `demo` and `tui` import anything heavy, and only when a rung needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_CULPRIT, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

CASE_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--model", "PATH", {"help": "the model under test (a transformers folder)"}),
    ("--base", "PATH", {"help": "the base model it was fine-tuned from"}),
    ("--harness", "FILE.py:FUNC", {"help": "your test code: a function called with one prompt, returning text"}),
    ("--harness-cmd", "CMD", {"help": "a shell command that prompts the model; {prompt} is replaced by the quoted prompt (without it, "
                                                   "the prompt goes to the command's stdin)"}),
    ("--harness-model", "PATH", {"help": "the checkpoint your harness loads, when it is not --model: its loads "
                                         "of it get --model instead"}),
    ("--transcript", "F.jsonl", {"help": "what a harness sent and received, one JSON object per line"}),
    ("--data", "PATH", {"help": "training data: a file or a folder of shards"}),
    ("--eval-data", "PATH", {"help": "evaluation data"}),
    ("--expect-samples", "N", {"type": int, "help": "how many training samples were meant to be used"}),
    ("--train-config", "F", {"help": "the training config (YAML, JSON or TOML)"}),
    ("--config-schema", "FILE.py:NAME", {"help": "where the config's keys are read: a dataclass, pydantic model, argparse factory"}),
    ("--run-dir", "D", {"help": "the training run's output folder (trainer_state.json, ...)"}),
    ("--batches", "F", {"help": "a dump of training batches: input_ids + labels"}),
    ("--collator", "FILE.py:FUNC", {"help": "your collator, applied to samples from --data"}),
    ("--text-field", "NAME", {"help": "the text field of the training data"}),
    ("--device", "D", {"help": "where ladder loads the model: auto (GPUs, sharded when needed), cpu, cuda, cuda:N"}),
    ("--dtype", "T", {"help": "dtype of ladder's own loads: auto (the checkpoint's), bfloat16, float16, float32"}),
    ("--max-memory", "SPEC", {"help": "the most memory each device may hold of ladder's own loads, DEVICE=SIZE,... "
                                      "(0=20GiB,cpu=48GiB): sharded over them, the rest offloaded to disk"}),
    ("--endpoint", "URL", {"help": "an OpenAI-compatible server that serves the model: http://HOST:PORT/v1"}),
    ("--served-model", "NAME", {"help": "the model name to request from --endpoint (default: the one it lists)"}),
    ("--api-key-env", "VAR", {"help": "the environment variable holding --endpoint's API key (never recorded)"}),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with a one-line message and a hint
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\nRun `{self.prog} --help` for the options.\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _add_case_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", nargs="?", metavar="CASE.yaml", help="a ladder.case.yaml (flags override it)")
    group = parser.add_argument_group("the case (what is being debugged)")
    for flag, metavar, extra in CASE_FLAGS:
        group.add_argument(flag, metavar=metavar, **extra)
    group.add_argument("--trust-remote-code", action="store_true", default=None,
                       help="allow a model with custom code to load")
    _add_ladder_flags(parser)


def _add_ladder_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ladder", metavar="F", help="a ladder YAML file or a shipped ladder's name "
                                                      "(default: llm-checkpoint)")
    parser.add_argument("--no-plugin", metavar="NAME", action="append", default=[],
                        help="do not load this third-party probe (or distribution); repeatable")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the run and its reports")
    group.add_argument("--keep-going", action="store_true", help="run every rung that is not blocked, "
                                                                 "instead of stopping at the first culprit")
    group.add_argument("--rung-timeout", type=float, metavar="S", help="seconds one rung may take")
    group.add_argument("--json", metavar="F", help="write the JSON report (schema ladder.report/1)")
    group.add_argument("--junit", metavar="F", help="write a JUnit XML report (a testcase per rung)")
    group.add_argument("--md", metavar="F", help="write a Markdown report, fit to paste into an issue")
    group.add_argument("--html", metavar="F", help="write one self-contained HTML page: the culprit, the evidence "
                                                   "side by side, the series as plots")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ladder", description=(
        "Is the model broken, or is the way you test it? ladder walks a ladder of hypotheses "
        "from mundane (no chat template, truncated data) to exotic (memorization, a damaged "
        "layer seam), probes each against the live model, and names the first culprit."),
        epilog="Exit status: 0 no culprit, 1 culprit found, 2 bad input, 3 incomplete (a probe error), "
               "130 interrupted.")
    from ladder import __version__

    parser.add_argument("--version", action="version", version=f"ladder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    probe = sub.add_parser("probe", help="walk the ladder against a case and name the culprit",
                           description="Walk the ladder against a case; stop at the first culprit.")
    _add_case_flags(probe)
    _add_run_flags(probe)

    demo = sub.add_parser("demo", help="build the founding case (a chat model fed raw text) and run ladder on it",
                          description="Build the founding case with tiny models trained on this machine "
                                      "(two to three minutes the first time, cached afterwards), write it to a "
                                      "folder you can open, and walk the ladder on it.")
    demo.add_argument("--out", metavar="DIR", default="ladder-demo", help="where to write the case: a new or empty folder, or one the demo wrote before (default: ./ladder-demo)")
    demo.add_argument("--fixed", action="store_true", help="the same case with the harness and data corrected")
    _add_run_flags(demo)

    preflight = sub.add_parser("preflight", help="before training: the data and config rungs, no model loaded",
                               description="Walk only the rungs that need no model, harness or server "
                                           "(data-count, label-mask, data-leak, config-read) on the case's data, "
                                           "collator and config: seconds, before the first training step. Every "
                                           "such rung runs; exit 1 when any fails.")
    _add_case_flags(preflight)
    _add_run_flags(preflight)

    sweep = sub.add_parser("sweep", help="the ladder once per checkpoint: a matrix of verdicts",
                           description="Run the case once per checkpoint (the model swapped, the harness's loads "
                                       "of the case's model redirected to it, every rung run), in parallel, and "
                                       "print one matrix: a row per checkpoint, a column per rung, and the first "
                                       "checkpoint where each rung turns from pass to fail.")
    _add_case_flags(sweep)
    sweep.add_argument("--models", metavar="GLOB", nargs="+", required=True,
                       help="the checkpoints: folders or globs, e.g. 'runs/*/checkpoint-*' (quoted)")
    sweep.add_argument("--jobs", type=int, metavar="N",
                       help="checkpoints run at once (default: one per GPU, each on its own GPU; else one per core)")
    sweep.add_argument("--ray", metavar="ADDRESS", help="run each checkpoint as a Ray task: auto (the running "
                                                        "cluster), local (start one here), or the cluster's address")
    sweep.add_argument("--gpus-per-run", type=float, default=0, metavar="N", help="GPUs each Ray task asks for")
    sweep.add_argument("--rung-timeout", type=float, metavar="S", help="seconds one rung may take")
    sweep.add_argument("--json", metavar="F", help="write the matrix as JSON (schema ladder.sweep/1)")
    sweep.add_argument("--md", metavar="F", help="write the matrix as Markdown")
    sweep.add_argument("--html", metavar="F", help="write the matrix as one self-contained HTML page")

    rules = sub.add_parser("rules", help="print the walk order of a ladder")
    _add_ladder_flags(rules)
    rules.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")

    validate = sub.add_parser("validate", help="check a ladder file and report every problem")
    validate.add_argument("file", nargs="?", metavar="FILE", help="the ladder to check (default: the shipped one)")
    validate.add_argument("--no-plugin", metavar="NAME", action="append", default=[])

    explain = sub.add_parser("explain", help="what a rung tests, why, how, and the fix")
    explain.add_argument("rung", metavar="ID")
    _add_ladder_flags(explain)

    schema = sub.add_parser("schema", help="print a JSON Schema (the ladder format by default)")
    schema.add_argument("what", nargs="?", choices=("ladder", "case", "report"), default="ladder")

    probes = sub.add_parser("probes", help="list the registered probes and where they come from")
    probes.add_argument("--no-plugin", metavar="NAME", action="append", default=[])

    tui = sub.add_parser("tui", help="walk the ladder interactively in the terminal")
    _add_case_flags(tui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    from ladder.errors import InputError

    _terminate_like_ctrl_c()
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"ladder: error: {problem}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("ladder: interrupted\n")
        return EXIT_INTERRUPTED


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (a CI job cancelled, `kill`) stops the walk as Ctrl-C does: the reports are still written,
    marked interrupted, and the exit status is 130. SIGINT does so too when ladder was started with it ignored
    (a background job of a shell script), where Python would otherwise leave it ignored."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ---- commands ------------------------------------------------------------------------------


def _registry(args):
    from ladder.registry import ProbeRegistry

    registry = ProbeRegistry(disabled=tuple(getattr(args, "no_plugin", []) or ()))
    return registry


def _warn_plugin_problems(registry) -> None:
    for problem in registry.problems:
        sys.stderr.write(f"ladder: warning: {problem}\n")


def cmd_rules(args) -> int:
    from rich.table import Table

    from ladder.cli_output import console
    from ladder.loader import load_ladder

    registry = _registry(args)
    ladder_ = load_ladder(args.ladder, registry)
    if args.markdown:
        print(rules_markdown(ladder_), end="")
        return EXIT_OK
    table = Table(title=f"ladder {ladder_.name}: walk order", title_justify="left")
    for column in ("#", "rung", "tier", "hypothesis"):
        table.add_column(column)
    for position, rung in enumerate(ladder_.ordered(), 1):
        table.add_row(str(position), rung.id, rung.tier.value, rung.title)
    console().print(table)
    _warn_plugin_problems(registry)
    return EXIT_OK


def rules_markdown(ladder_) -> str:
    """The walk order as a Markdown table (the README's rung table is this output)."""
    lines = ["| # | rung | tier | hypothesis |", "|---|---|---|---|"]
    for position, rung in enumerate(ladder_.ordered(), 1):
        lines.append(f"| {position} | `{rung.id}` | {rung.tier.value} | {rung.title} |")
    return "\n".join(lines) + "\n"


def cmd_validate(args) -> int:
    from ladder.loader import ladder_path, load_ladder

    registry = _registry(args)
    ladder_ = load_ladder(args.file, registry)
    print(f"{ladder_path(args.file)}: ok: {len(ladder_.rungs)} rungs, "
          f"walk order {' -> '.join(ladder_.order)}")
    _warn_plugin_problems(registry)
    return EXIT_OK


def cmd_explain(args) -> int:
    from rich.markdown import Markdown

    from ladder.cli_output import console
    from ladder.errors import InputError
    from ladder.loader import did_you_mean, load_ladder

    registry = _registry(args)
    ladder_ = load_ladder(args.ladder, registry)
    ids = [r.id for r in ladder_.rungs]
    if args.rung not in ids:
        raise InputError.single(f"no rung {args.rung!r} in ladder {ladder_.name}{did_you_mean(args.rung, ids)}; "
                                f"rungs: {', '.join(ladder_.order)}")
    rung = ladder_.rung(args.rung)
    probe_class = registry.get(rung.probe)
    doc = sys.modules[probe_class.__module__].__doc__ or probe_class.__doc__ or ""
    position = ladder_.order.index(rung.id) + 1
    after = ", ".join(rung.after) or "nothing"
    text = (f"# {rung.id}  ({rung.tier.value}, step {position} of {len(ladder_.order)})\n\n"
            f"**Hypothesis:** {rung.title}\n\n**Why it matters:** {rung.why.strip()}\n\n"
            f"**How it is probed** (probe `{rung.probe}`, after {after}):\n\n{_dedent(doc)}\n\n"
            f"**Fix:** {rung.fix.strip()}\n")
    if rung.params:
        text += "\n**Params:** " + ", ".join(f"`{k}={v}`" for k, v in rung.params.items()) + "\n"
    console().print(Markdown(text))
    return EXIT_OK


def _dedent(text: str) -> str:
    import inspect

    return inspect.cleandoc(text)


def cmd_schema(args) -> int:
    if args.what == "report":
        from ladder.report import SCHEMA_PATH

        print(SCHEMA_PATH.read_text(encoding="utf-8"), end="")
        return EXIT_OK
    from ladder.case import Case
    from ladder.models import LadderFile

    model = LadderFile if args.what == "ladder" else Case
    schema = model.model_json_schema()
    schema.get("properties", {}).pop("source", None)
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def cmd_probes(args) -> int:
    registry = _registry(args)
    for name in registry.names():
        print(f"{name:24} {registry.origin(name)}")
    _warn_plugin_problems(registry)
    return EXIT_OK


def _case_overrides(args) -> dict[str, Any]:
    keys = [flag[2:].replace("-", "_") for flag, _, _ in CASE_FLAGS] + ["trust_remote_code"]
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def cmd_probe(args) -> int:
    from ladder.case import load_case

    case = load_case(args.case, _case_overrides(args))
    return _run_and_report(case, args)


def cmd_preflight(args) -> int:
    from ladder.case import load_case

    case = load_case(args.case, _case_overrides(args))
    args.keep_going = True
    return _run_and_report(case, args, preflight=True)


def cmd_sweep(args) -> int:
    from rich.console import Console

    from ladder.case import load_case
    from ladder.errors import InputError
    from ladder.report.writers import write_whole
    from ladder.sweep import expand_models, markdown, print_table, run_sweep

    _check_output_paths(args)
    given = _case_overrides(args)
    case = load_case(args.case, given)
    if case.transcript and not (case.harness or case.harness_cmd):
        raise InputError.single("a transcript cannot be re-run on other checkpoints: give the harness that made "
                                "it (--harness or --harness-cmd)")
    models = expand_models(args.models)
    forwarded: list[str] = []
    for flag, _, _ in CASE_FLAGS:
        key = flag[2:].replace("-", "_")
        if key not in ("model", "harness_model") and given.get(key) is not None:
            forwarded += [flag, str(given[key])]
    if given.get("trust_remote_code"):
        forwarded.append("--trust-remote-code")
    for flag, value in (("--ladder", args.ladder), ("--rung-timeout", args.rung_timeout)):
        if value is not None:
            forwarded += [flag, str(value)]
    for name in args.no_plugin:
        forwarded += ["--no-plugin", name]
    harness_model = case.model if (case.harness or case.harness_cmd) and case.model else None

    def progress(row, done: int, total: int) -> None:
        outcome = row.culprit or (f"error: {row.error}" if row.error else "no culprit")
        sys.stderr.write(f"ladder sweep: [{done}/{total}] {row.model}: {outcome} ({row.seconds:.0f} s)\n")

    sys.stderr.write(f"ladder sweep: {len(models)} checkpoints\n")
    result = run_sweep(str(Path(args.case).resolve()) if args.case else None, models, overrides=forwarded,
                       jobs=args.jobs, on_row=progress, harness_model=harness_model, ray_address=args.ray,
                       gpus_per_run=args.gpus_per_run)
    matrix = result.to_json_dict()
    if args.json:
        write_whole(Path(args.json), json.dumps(matrix, indent=1))
    if args.md:
        write_whole(Path(args.md), markdown(result))
    if args.html:
        from ladder.report.html import sweep_html

        write_whole(Path(args.html), sweep_html(matrix))
    print_table(result, Console())
    if result.interrupted:
        return EXIT_INTERRUPTED
    if any(row.error for row in result.rows):
        return EXIT_INCOMPLETE
    return EXIT_CULPRIT if any(row.culprit for row in result.rows) else EXIT_OK


def cmd_demo(args) -> int:
    from ladder.case import load_case
    from ladder.demo import prepare_demo

    def say(message: str) -> None:
        sys.stderr.write(f"ladder demo: {message}\n")

    _check_output_paths(args)  # before minutes of building (prepare_demo checks --out itself first)

    case_file = prepare_demo(Path(args.out), fixed=args.fixed, progress=say)
    say(f"the case is in {case_file.parent}: open case.yaml, harness.py, data/ and run/ to see what ladder sees")
    args.ladder, args.no_plugin = None, []
    return _run_and_report(load_case(case_file), args)


def cmd_tui(args) -> int:
    from ladder.tui.app import run_tui

    return run_tui(args)


def _check_output_paths(args) -> None:
    from ladder.errors import InputError, Problem

    problems = []
    for kind in ("json", "junit", "md", "html"):
        value = getattr(args, kind, None)
        if value is None:
            continue
        path = Path(value)
        if path.is_dir():
            problems.append(Problem(f"--{kind} {value} is a directory; give a file path"))
        elif path.parent != Path("") and not path.parent.exists():
            problems.append(Problem(f"--{kind} {value}: folder {path.parent} does not exist"))
        elif (reason := _unwritable(path.parent)) is not None:
            problems.append(Problem(f"--{kind} {value}: cannot write in folder {path.parent} ({reason})"))
    if problems:
        raise InputError(problems)


def _unwritable(folder: Path) -> str | None:
    """Why a file cannot be created in `folder` (tried for real: permissions, a read-only or full disk), or None."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ladder-write-check-"):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _run_and_report(case, args, preflight: bool = False) -> int:
    from ladder.cli_output import RunDisplay
    from ladder.loader import load_ladder
    from ladder.report.writers import write_report
    from ladder.runner import Runner, exit_status

    _check_output_paths(args)
    registry = _registry(args)
    ladder_ = load_ladder(args.ladder, registry)
    if preflight:
        from ladder.preflight import preflight_ladder

        ladder_ = preflight_ladder(ladder_, registry)
    _warn_plugin_problems(registry)
    display = RunDisplay()
    runner = Runner(ladder_, case, registry=registry, keep_going=args.keep_going,
                    rung_timeout=args.rung_timeout, on_event=display.on_event)
    report = runner.run()
    for kind in ("json", "junit", "md", "html"):  # the files first: a table that fails to render loses nothing
        if getattr(args, kind, None):
            write_report(report, kind, Path(getattr(args, kind)))
    try:
        display.summary(report, ladder_)
    except Exception as exc:  # the answer is in the reports and the exit status; say what went wrong, once
        sys.stderr.write(f"ladder: the terminal table could not be printed ({type(exc).__name__}: {exc}); "
                         "the reports were written\n")
        return EXIT_INCOMPLETE
    return exit_status(report)


COMMANDS = {
    "probe": cmd_probe, "preflight": cmd_preflight, "sweep": cmd_sweep, "demo": cmd_demo, "rules": cmd_rules,
    "validate": cmd_validate, "explain": cmd_explain, "schema": cmd_schema, "probes": cmd_probes, "tui": cmd_tui,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
