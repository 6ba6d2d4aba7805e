"""The variety matrix: models x tokenizer settings x harness forms, each combination with the culprit the
default ladder must name (None on every healthy one). No case gives `prompts:`: the default questions
decide, as for a new user.

Shared by tests/test_matrix.py (the interface rungs, in process) and bench/bench_matrix.py (the whole
default ladder through the real CLI). Trained models come from the factory's cache; tokenizer variants are
copies of a model folder with only the tokenizer's settings changed (cached by `derived_model`).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from derived_models import derived_model
from interface_models import variant_harness

FAMILIES = ("chatml", "gemma")  # the factory's trained template families
# (padding side, pad token): as shipped (left, distinct pad), and what real tokenizers ship with
TOKENIZER_SETTINGS = (("left", "distinct"), ("right", "distinct"), ("right", "eos"), ("left", "none"))
# harness variant -> (variant_harness keywords, culprit, batched)
HARNESSES = {
    "template": ({"mode": "template", "batch": False}, None),
    "template+batch": ({"mode": "template", "batch": True}, None),
    "raw": ({"mode": "raw", "batch": False}, "prompt-format"),
    "truncated": ({"mode": "truncate", "batch": False}, "prompt-format"),
    "twice": ({"mode": "twice", "batch": False}, "prompt-format"),
    "render-then-tokenize": ({"mode": "render-then-tokenize", "batch": False}, "by-family"),
    "right-padded-batch": ({"mode": "template", "batch": True, "padding_side": "right"}, "batch-consistency"),
}
RENDER_THEN_TOKENIZE = {"chatml": None, "gemma": "special-tokens"}  # the gemma tokenizer adds a second BOS


@dataclass(frozen=True)
class Combination:
    family: str
    padding_side: str
    pad: str
    harness: str
    form: str  # function | command

    @property
    def name(self) -> str:
        return f"{self.family}-{self.padding_side}-pad_{self.pad}-{self.harness}-{self.form}"

    @property
    def culprit(self) -> str | None:
        culprit = HARNESSES[self.harness][1]
        return RENDER_THEN_TOKENIZE[self.family] if culprit == "by-family" else culprit


def combinations() -> list[Combination]:
    """Every harness on each family's tokenizer as shipped, in both forms; the healthy and the raw harness
    on every other tokenizer setting (the settings change nothing on a one-prompt-at-a-time path)."""
    out = []
    for family in FAMILIES:
        for harness in HARNESSES:
            out.append(Combination(family, "left", "distinct", harness, "function"))
        for harness in ("template", "raw"):
            out.append(Combination(family, "left", "distinct", harness, "command"))
        for side, pad in TOKENIZER_SETTINGS[1:]:
            for harness in ("template", "raw"):
                out.append(Combination(family, side, pad, harness, "function"))
    return out


def model_for(family: str, padding_side: str, pad: str) -> Path:
    """The family's chat model, its tokenizer saved with `padding_side` and pad (distinct, eos, none)."""
    from ladder.fixtures import models

    source = models.chat_model_dir(family)
    if (padding_side, pad) == ("left", "distinct"):
        return source

    def build(dest: Path) -> None:
        for path in source.iterdir():
            if path.is_file() and path.name != "manifest.json":
                shutil.copy2(path, dest / path.name)
        config = json.loads((dest / "tokenizer_config.json").read_text())
        config["padding_side"] = padding_side
        if pad == "eos":
            config["pad_token"] = config.get("eos_token")
        elif pad == "none":
            config["pad_token"] = None
        (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=1))

    return derived_model("matrix-tokenizer", [source], {"side": padding_side, "pad": pad}, build)


def write_case(combo: Combination, folder: Path) -> Path:
    """A case folder (model by path, the harness file, case.yaml without prompts); returns case.yaml."""
    import yaml

    model = model_for(combo.family, combo.padding_side, combo.pad)
    keywords, _ = HARNESSES[combo.harness]
    keywords = {"padding_side": combo.padding_side, **keywords}
    spec = variant_harness(folder, model, doc=combo.name, **keywords)
    case = {"description": combo.name, "model": str(model)}
    if combo.form == "function":
        case["harness"] = spec
    else:
        script = folder / "ask.py"
        script.write_text(f"import sys\nsys.path.insert(0, {str(folder)!r})\nimport harness\n"
                          "print(harness.ask(sys.argv[1]))\n", encoding="utf-8")
        case["harness_cmd"] = f"{sys.executable} {script} {{prompt}}"
    path = folder / "case.yaml"
    path.write_text(yaml.safe_dump(case, sort_keys=False), encoding="utf-8")
    return path
