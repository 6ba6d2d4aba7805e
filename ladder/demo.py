"""`ladder demo`: a ready-made case to run the ladder on, the founding story of the tool.

`prepare_demo` builds (or reuses from the fixture cache) the founding case: a chat
model that is fine, tested by a harness that never applies the chat template, with a
training config whose sample cap kept 9% of the rows. With `fixed=True` it is the same
case corrected (template applied, every row loaded). The case is copied into `out_dir`
so every file can be opened, and the path of its `case.yaml` is returned.
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


def prepare_demo(out_dir: Path, fixed: bool = False, progress: Callable[[str], None] = print) -> Path:
    """Write the founding case (or its fixed version) into `out_dir`; return the path of its case.yaml."""
    from ladder.fixtures import cache
    from ladder.fixtures.cases import build_case
    from ladder.fixtures.models import quiet_transformers

    out_dir = Path(out_dir)
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
    out_dir.mkdir(parents=True, exist_ok=True)
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
