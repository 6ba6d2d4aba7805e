"""Template families of real models for the fixture factory, from `../shared/real_chat_templates/`.

Each family is the real template (as its source repository uses it: indentation and newlines stripped,
unless the template trims whitespace itself with `{%-`) with special-token spellings of that family, so
the factory trains a tiny chat model that speaks it (`ladder.fixtures.models.chat_model_dir(name)`).
Markers come both as added special tokens (llama-3's headers, chatml's turns) and as plain text
(mistral's `[INST]`, vicuna's `USER:`); llama-3's `<|end_header_id|>` is a token added after the shared
vocabulary, as a fine-tune that extends a tokenizer adds it.

Importing this module registers the families; `FAMILIES` lists every family the tests train, built-in ones
first. `MORE_FAMILIES` are families the tests never train (llama-2-chat's per-turn `<s>[INST]`, alpaca's
`### Instruction:`, openchat's `GPT4 Correct User:` closed by an added `<|end_of_turn|>`, saiga's `<s>bot\n` per
turn, and templates that close a reply with no token at all, trained as their models were, with eos after the
reply: solar's `### Assistant:`, amberchat's `###Assistant:`, falcon's BOS-less `\n\nAssistant:`, chatqa's
Llama-3 tokens with `\n\nAssistant:`), and the families of tests/templates/ (phi-3, zephyr, granite-3,
llama-3.1-instruct, qwen3, gemma-3): the bench runs them
(`bench/bench_matrix.py --more-families`) to check that no rule was fitted to the trained ones.
"""

from __future__ import annotations

from pathlib import Path

from ladder.fixtures.tokenizer import STYLES, TemplateStyle, register_style

REAL_TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "real_chat_templates" / "chat_templates"
TRANSCRIBED_TEMPLATES = Path(__file__).resolve().parent / "templates"


def real_template(name: str) -> str:
    text = (REAL_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    return text if "{%-" in text else text.replace("    ", "").replace("\n", "")


def transcribed_template(name: str) -> str:
    """A template of tests/templates/ as published (its whitespace as the Jinja source has it)."""
    return (TRANSCRIBED_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def _families() -> list[TemplateStyle]:
    return [
        TemplateStyle(name="llama-3-instruct", pad="<|finetune_right_pad_id|>", bos="<|begin_of_text|>",
                      eos="<|end_of_text|>", turn_start="<|start_header_id|>", turn_end="<|eot_id|>",
                      bos_in_template=True, chat_template=real_template("llama-3-instruct"),
                      added_tokens=("<|end_header_id|>",)),
        TemplateStyle(name="mistral-instruct", pad="<unk>", bos="<s>", eos="</s>", turn_start="<unused0>",
                      turn_end="<unused1>", bos_in_template=True, chat_template=real_template("mistral-instruct"),
                      end_of_turn="</s>"),
        TemplateStyle(name="vicuna", pad="<unk>", bos="<s>", eos="</s>", turn_start="<unused0>", turn_end="<unused1>",
                      bos_in_template=True, chat_template=real_template("vicuna"), end_of_turn="</s>"),
        TemplateStyle(name="qwen2.5-instruct", pad="<|endoftext|>", bos="<|startoftext|>", eos="<|im_end|>",
                      turn_start="<|im_start|>", turn_end="<|object_ref_start|>", bos_in_template=False,
                      chat_template=real_template("qwen2.5-instruct"), end_of_turn="<|im_end|>"),
    ]


def _more_families() -> list[TemplateStyle]:
    plain = dict(pad="<unk>", bos="<s>", eos="</s>", turn_start="<unused0>", bos_in_template=True)
    return [
        TemplateStyle(name="llama-2-chat", turn_end="<unused1>", chat_template=real_template("llama-2-chat"),
                      end_of_turn="</s>", **plain),
        TemplateStyle(name="alpaca", turn_end="<unused1>", chat_template=real_template("alpaca"), end_of_turn="</s>",
                      **plain),
        TemplateStyle(name="openchat-3.5", turn_end="<|end_of_turn|>", chat_template=real_template("openchat-3.5"),
                      **plain),
        TemplateStyle(name="saiga", turn_end="<unused1>", chat_template=real_template("saiga"), end_of_turn="</s>",
                      **plain),
        TemplateStyle(name="solar-instruct", turn_end="<unused1>", chat_template=real_template("solar-instruct"),
                      end_of_turn="</s>", **plain),
        TemplateStyle(name="amberchat", turn_end="<unused1>", chat_template=real_template("amberchat"),
                      end_of_turn="</s>", **plain),
        TemplateStyle(name="falcon-instruct", pad="<|pad|>", bos="<|startoftext|>", eos="<|endoftext|>",
                      turn_start="<unused0>", turn_end="<unused1>", bos_in_template=False,
                      chat_template=real_template("falcon-instruct"), end_of_turn="<|endoftext|>"),
        TemplateStyle(name="chatqa", pad="<|finetune_right_pad_id|>", bos="<|begin_of_text|>", eos="<|end_of_text|>",
                      turn_start="<unused0>", turn_end="<unused1>", bos_in_template=True,
                      chat_template=real_template("chatqa"), end_of_turn="<|end_of_text|>"),
        *_transcribed_families(),
    ]


def _transcribed_families() -> list[TemplateStyle]:
    """Families of tests/templates/ (DeepSeek-R1's is left out: its generation prompt opens a think block that
    its own template strips from every rendered reply, so no reply-only recipe trains that format)."""
    return [
        # markers as added tokens, no BOS anywhere, eos closes the text when no reply is asked for
        TemplateStyle(name="phi-3", pad="<unk>", bos="<s>", eos="<|endoftext|>", turn_start="<|user|>",
                      turn_end="<|end|>", bos_in_template=False, chat_template=transcribed_template("phi-3"),
                      added_tokens=("<|assistant|>", "<|system|>")),
        # plain-text markers, turns closed by eos, a BOS the tokenizer adds and the template does not write
        TemplateStyle(name="zephyr", pad="<unk>", bos="<s>", eos="</s>", turn_start="<unused0>", turn_end="<unused1>",
                      bos_in_template=True, chat_template=transcribed_template("zephyr"), end_of_turn="</s>"),
        # a default system prompt holding today's date
        TemplateStyle(name="granite-3", pad="<|pad|>", bos="<|startoftext|>", eos="<|end_of_text|>",
                      turn_start="<|start_of_role|>", turn_end="<|end_of_role|>", bos_in_template=False,
                      chat_template=transcribed_template("granite-3"), end_of_turn="<|end_of_text|>"),
        # a system header on every prompt, with a knowledge cut-off and today's date
        TemplateStyle(name="llama-3.1-instruct", pad="<|finetune_right_pad_id|>", bos="<|begin_of_text|>",
                      eos="<|end_of_text|>", turn_start="<|start_header_id|>", turn_end="<|eot_id|>",
                      bos_in_template=True, chat_template=transcribed_template("llama-3.1-instruct"),
                      added_tokens=("<|end_header_id|>",)),
        TemplateStyle(name="qwen3", pad="<|endoftext|>", bos="<|startoftext|>", eos="<|im_end|>",
                      turn_start="<|im_start|>", turn_end="<|object_ref_start|>", bos_in_template=False,
                      chat_template=transcribed_template("qwen3"), end_of_turn="<|im_end|>",
                      added_tokens=("<think>", "</think>")),
        # the system message folded into the first user turn, content trimmed
        TemplateStyle(name="gemma-3", pad="<pad>", bos="<bos>", eos="<eos>", turn_start="<start_of_turn>",
                      turn_end="<end_of_turn>", bos_in_template=True, chat_template=transcribed_template("gemma-3")),
    ]


REAL_FAMILIES = tuple(register_style(style).name for style in _families())
FAMILIES = (*STYLES, *REAL_FAMILIES)
MORE_FAMILIES = tuple(register_style(style).name for style in _more_families())
