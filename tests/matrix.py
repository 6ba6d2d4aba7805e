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
from families import MORE_FAMILIES, REAL_FAMILIES
from interface_models import CLIENT_HARNESSES, client_harness, variant_harness, write_case as case_file

from ladder.fixtures.tokenizer import STYLES, get_style

# (family, training recipe): the built-in families and real ones, fine-tuned with the loss on the reply;
# chatml also with the loss on the whole conversation (raw text then stops at once instead of rambling)
MODELS = (*((family, "reply") for family in STYLES + REAL_FAMILIES), ("chatml", "conversation"))
# (padding side, pad token): as shipped (left, distinct pad), and what real tokenizers ship with
TOKENIZER_SETTINGS = (("left", "distinct"), ("right", "distinct"), ("right", "eos"), ("left", "none"))
# the culprit depends on what the fault does to the model's replies, measured (Combination.expected)
MEASURED = "measured"
# harness variant -> (variant_harness keywords, culprit)
HARNESSES = {
    "template": ({"mode": "template", "batch": False}, None),
    "template+batch": ({"mode": "template", "batch": True}, None),
    "raw": ({"mode": "raw", "batch": False}, "prompt-format"),
    "truncated": ({"mode": "truncate", "batch": False}, "prompt-format"),
    "twice": ({"mode": "twice", "batch": False}, "prompt-format"),
    "other-template": ({"mode": "other-template", "batch": False}, "prompt-format"),
    "render-then-tokenize": ({"mode": "render-then-tokenize", "batch": False}, "by-family"),
    "few-shot": ({"mode": "few-shot", "batch": False}, None),
    "system": ({"mode": "system", "batch": False}, None),
    "right-padded-batch": ({"mode": "template", "batch": True, "padding_side": "right"}, "batch-consistency"),
}
# what each harness of the matrix is run on: the built-in families get every one
REAL_FAMILY_HARNESSES = ("template", "raw", "truncated", "twice", "other-template", "render-then-tokenize", "few-shot",
                         "system")
# harnesses on real clients (CLIENT_HARNESSES: a transformers pipeline, lm-eval's generate_until), on a family
# with markers as added tokens and one with plain-text markers and BOS in the template
CLIENT_FAMILIES = {"chatml": ("template+batch", "raw", "right-padded-batch"),
                   "mistral-instruct": ("template+batch", "raw")}
# the other family's template an "other-template" harness renders with
OTHER_TEMPLATE = {"chatml": "vicuna", "qwen2.5-instruct": "vicuna", "qwen3": "vicuna"}  # else chatml


@dataclass(frozen=True)
class Combination:
    family: str
    padding_side: str
    pad: str
    harness: str
    form: str  # function | command | transcript | a client of CLIENT_HARNESSES (pipeline, lm-eval)
    recipe: str = "reply"
    architecture: str = "llama"  # the model type the family's model is built as (train.ARCHITECTURES)

    @property
    def name(self) -> str:
        recipe = "" if self.recipe == "reply" else f"-{self.recipe}_loss"
        architecture = "" if self.architecture == "llama" else f"-{self.architecture}"
        return f"{self.family}{recipe}{architecture}-{self.padding_side}-pad_{self.pad}-{self.harness}-{self.form}"

    @property
    def culprit(self) -> str | None:
        """The culprit the combination must get; MEASURED where it depends on what the fault does to this
        model's replies (see `expected`)."""
        culprit = HARNESSES[self.harness][1]
        if culprit == "by-family":  # rendered to text, then tokenized: a tokenizer that adds BOS doubles the
            style = get_style(self.family)  # template's (zephyr's tokenizer adds one its template does not write)
            writes_bos = style.render([{"role": "user", "content": "x"}], True).startswith(style.bos)
            return MEASURED if style.bos_in_template and writes_bos else None
        return culprit

    def expected(self, verdicts: dict[str, tuple[str, dict]]) -> str | None:
        """The culprit given the rungs' (status, evidence): a doubled BOS is special-tokens' culprit where it
        changes the replies materially (its `bos_effect`, measured), else none; it is always shown (a fail or
        a warn). Tests of its miss and false alarm on models where the effect is known: test_special_tokens."""
        if self.culprit != MEASURED:
            return self.culprit
        status, evidence = verdicts.get("special-tokens", ("missing", {}))
        if status not in ("fail", "warn") or not (evidence.get("bos_effect") or {}).get("prompts"):
            return "special-tokens (the doubled BOS, shown and measured)"
        return "special-tokens" if evidence["bos_effect"]["material"] else None


def combinations(more_families: bool = False, more_architectures: bool = False) -> list[Combination]:
    """Every harness on the built-in families' tokenizers as shipped, in the function form; the healthy
    and the raw harness in the command and transcript forms and on every other tokenizer setting (the
    settings change nothing on a one-prompt-at-a-time path). On the real families and the second recipe,
    the healthy and every broken one-prompt harness, and the healthy one on a right-padding pad == eos
    tokenizer. On CLIENT_FAMILIES, harnesses on each real client (a pipeline, lm-eval's generate_until).
    `more_families`: also the families the tests never train (families.MORE_FAMILIES), as the real ones.
    `more_architectures`: also MORE_ARCHITECTURES's families built as other model types, as the real ones."""
    out = []
    for family, recipe in (*MODELS, *((family, "reply") for family in (MORE_FAMILIES if more_families else ()))):
        if family in STYLES and recipe == "reply":
            out += [Combination(family, "left", "distinct", harness, "function") for harness in HARNESSES
                    if harness != "other-template"]
            for form in ("command", "transcript"):
                out += [Combination(family, "left", "distinct", harness, form) for harness in ("template", "raw")]
            for side, pad in TOKENIZER_SETTINGS[1:]:
                out += [Combination(family, side, pad, harness, "function") for harness in ("template", "raw")]
        else:
            out += [Combination(family, "left", "distinct", harness, "function", recipe)
                    for harness in REAL_FAMILY_HARNESSES]
            out.append(Combination(family, "right", "eos", "template", "function", recipe))
        if recipe == "reply":
            out += [Combination(family, "left", "distinct", harness, client)
                    for client in CLIENT_HARNESSES for harness in CLIENT_FAMILIES.get(family, ())]
    for architecture, family in (MORE_ARCHITECTURES if more_architectures else ()):
        out += [Combination(family, "left", "distinct", harness, "function", architecture=architecture)
                for harness in REAL_FAMILY_HARNESSES]
        out.append(Combination(family, "right", "eos", "template", "function", architecture=architecture))
    return out


# (model type, family) pairs the bench builds beside the Llama ones: other module layouts, norms, position
# schemes and tied heads (gpt2, gemma), with markers as added tokens (chatml, llama-3, qwen2.5) and as plain text
# (mistral, vicuna); each loads with its model type's tokenizer class, whose defaults differ (Qwen2's adds a token)
MORE_ARCHITECTURES = (("qwen2", "chatml"), ("gpt2", "chatml"), ("gpt_neox", "chatml"), ("gemma", "chatml"),
                      ("phi3", "chatml"), ("olmo", "chatml"), ("qwen2", "mistral-instruct"),
                      ("gpt2", "mistral-instruct"), ("qwen2", "qwen2.5-instruct"), ("gemma", "llama-3-instruct"),
                      ("gpt_neox", "vicuna"), ("phi3", "mistral-instruct"))


def chat_recipe(family: str, recipe: str = "reply"):
    """The built-in families' recipe as the factory ships it; the others with the matrix's premise (retrained
    with another batch order, up to 3 attempts, until it holds: `models.MATRIX_PREMISE_BAR`)."""
    from ladder.fixtures.train import ChatRecipe

    if family in STYLES and recipe == "reply":
        return ChatRecipe(style=family)
    return ChatRecipe(style=family, loss_on=recipe, premise_attempts=3, premise="matrix")


def trained_model(family: str, recipe: str = "reply", architecture: str = "llama") -> Path:
    from ladder.fixtures import models
    from ladder.fixtures.train import BaseRecipe, ChatRecipe, ModelShape

    if architecture == "llama":
        return models.chat_model_dir(family, chat_recipe=chat_recipe(family, recipe))
    return models.chat_model_dir(family, base_recipe=BaseRecipe(shape=ModelShape(architecture=architecture)),
                                 chat_recipe=ChatRecipe(style=family, loss_on=recipe, premise_attempts=3,
                                                        premise="matrix"))


def model_for(family: str, padding_side: str, pad: str, recipe: str = "reply", architecture: str = "llama") -> Path:
    """The family's chat model, its tokenizer saved with `padding_side` and pad (distinct, eos, none)."""
    source = trained_model(family, recipe, architecture)
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


# what a transcript's harness was asked (its user's own questions, not ladder's default prompts)
TRANSCRIPT_QUESTIONS = ("What is 4 plus 5?", "Add 2 and 6.", "How much is 7 plus 1?", "Tell me 3 plus 3.")


def record_transcript(folder: Path, questions=TRANSCRIPT_QUESTIONS) -> Path:
    """Run the harness in `folder` on `questions` in a child process and write what it sent and got as a
    transcript (docs/transcript.md): prompt, input_ids, output."""
    import subprocess

    path = folder / "transcript.jsonl"
    script = (f"import json, sys\nsys.path.insert(0, {str(folder)!r})\nimport harness\n"
              f"with open({str(path)!r}, 'w') as out:\n"
              f"    for q in {list(questions)!r}:\n"
              "        out.write(json.dumps({'prompt': q, 'input_ids': list(harness._ids(q)), "
              "'output': harness.ask(q)}) + '\\n')\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return path


def write_case(combo: Combination, folder: Path) -> Path:
    """A case folder (model by path, the harness file, case.yaml without prompts); returns case.yaml."""
    model = model_for(combo.family, combo.padding_side, combo.pad, combo.recipe, combo.architecture)
    keywords, _ = HARNESSES[combo.harness]
    keywords = {"padding_side": combo.padding_side, **keywords}
    if combo.harness == "other-template":
        keywords["other_template"] = get_style(OTHER_TEMPLATE.get(combo.family, "chatml")).chat_template
    case = {"description": combo.name, "model": str(model)}
    if combo.form in CLIENT_HARNESSES:
        case["harness"] = client_harness(folder, model, combo.form, mode=keywords["mode"], doc=combo.name,
                                         padding_side=keywords["padding_side"], batch=keywords["batch"])
        return case_file(folder, **case)
    spec = variant_harness(folder, model, doc=combo.name, **keywords)
    if combo.form == "function":
        case["harness"] = spec
    elif combo.form == "transcript":
        case["transcript"] = str(record_transcript(folder))
    else:
        script = folder / "ask.py"
        script.write_text(f"import sys\nsys.path.insert(0, {str(folder)!r})\nimport harness\n"
                          "print(harness.ask(sys.argv[1]))\n", encoding="utf-8")
        case["harness_cmd"] = f"{sys.executable} {script} {{prompt}}"
    return case_file(folder, **case)


