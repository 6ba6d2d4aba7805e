"""`ladder demo`: a ready-made case to run the ladder on, the founding story of the tool.

`prepare_demo` builds (or reuses from the fixture cache) the founding case: a chat
model that is fine, tested by a harness that never applies the chat template, with a
training config whose sample cap kept 9% of the rows. With `fixed=True` it is the same
case corrected (template applied, every row loaded). The case is copied into `out_dir`
so every file can be opened, and the path of its `case.yaml` is returned.

The demo writes only into a folder that is new, empty, or one it wrote before (it leaves
`DEMO_MARKER` there): pointed at a folder of the user's (`--out .` in a project with its own
`data/` or `model/`), it refuses before building anything, and nothing there is touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

FIXED_DESCRIPTION = (
    "The founding case, fixed: the harness now applies the chat template (add_generation_prompt, tokenized "
    "by the template) and the training config no longer caps the samples, so every row is loaded. Nothing "
    "should be wrong here."
)


DEMO_MARKER = ".ladder-demo"


def check_demo_folder(out_dir: Path) -> None:
    """Raise `InputError` unless `out_dir` is new, an empty folder, or a folder the demo wrote before."""
    from ladder.errors import InputError

    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise InputError.single(f"--out {out_dir} is not a folder; give a new or empty folder for the demo")
    if (out_dir / DEMO_MARKER).is_file() or not any(out_dir.iterdir()):
        return
    raise InputError.single(f"--out {out_dir} holds files the demo did not write "
                            f"({', '.join(sorted(p.name for p in out_dir.iterdir())[:5])}); the demo writes only "
                            "into a new or empty folder, or one it wrote before: give another --out")


def prepare_demo(out_dir: Path, fixed: bool = False, progress: Callable[[str], None] = print) -> Path:
    """Write the founding case (or its fixed version) into `out_dir`; return the path of its case.yaml.
    Refuses (`InputError`, nothing touched) a folder that `check_demo_folder` does not accept."""
    from ladder.fixtures import cache
    from ladder.fixtures.cases import build_case
    from ladder.fixtures.models import quiet_transformers

    out_dir = Path(out_dir)
    check_demo_folder(out_dir)
    name = "healthy" if fixed else "founding"

    def say(message: str) -> None:
        if progress:
            progress(message)

    announced = False

    def on_build(message: str) -> None:
        nonlocal announced
        if not announced:
            say("building the base and chat models (first run only, 2-3 min on 2 cores)…")
            announced = True
        say(message)

    with quiet_transformers():
        entry = build_case(name, progress=on_build)
    check_demo_folder(out_dir)  # again: the build took minutes
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DEMO_MARKER).write_text("written by `ladder demo`; it may replace what it wrote here\n",
                                       encoding="utf-8")
    for path in entry.iterdir():
        if path.name == cache.MANIFEST:
            continue
        target = out_dir / path.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copy2(path, target)
    case_file = out_dir / "case.yaml"
    if fixed:
        import yaml

        case = yaml.safe_load(case_file.read_text(encoding="utf-8"))
        case["description"] = FIXED_DESCRIPTION
        case_file.write_text(yaml.safe_dump(case, sort_keys=False, allow_unicode=True), encoding="utf-8")
    say(f"{'fixed ' if fixed else ''}founding case written to {out_dir}")
    return case_file
