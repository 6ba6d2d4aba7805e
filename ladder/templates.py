"""Chat templates, understood by rendering them: turn markers, end of turn, and what a prompt went through.

Nothing here knows any model family. A template is analysed by rendering it on
probe conversations whose contents are sentinel words and reading off the text
around them: what opens a user turn, what closes it, what `add_generation_prompt`
appends, what closes an assistant turn (the end-of-turn string). The same
renderings, with the sentinels turned into capture groups, give patterns that
recognise a text as "this template applied to some conversation", which is how
`classify` tells whether what a harness sent went through the template, through
it twice, without the generation prompt, through some other format, or as raw text.
A template that writes the date (Llama 3.1, Granite: `strftime_now`) is rendered
for the patterns at two far-apart clocks, and what differs between the two matches
any text: a prompt rendered on another day (a transcript, a server in another time
zone, a run across midnight) is still the template's.

Renderers: `renderer_for_tokenizer(tokenizer)` (the model's own, via
`apply_chat_template(tokenize=False)`) or `renderer_for_template(text, bos, eos)`
(a bare Jinja template, rendered by `apply_chat_template` of a minimal tokenizer).
Importing this module imports no torch.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

Messages = list[dict[str, str]]
Renderer = Callable[[Messages, bool], str]

# Two clocks whose renderings differ in every character of every date and time field (day, month, year, hour,
# weekday, in digits and in words), so that what differs between them spans each field whole.
CLOCKS = (datetime(1999, 1, 1, 0, 0, 0), datetime(2088, 12, 28, 23, 59, 58))

SENTINELS = {
    "system": "laddersystemnote",
    "user": "ladderquestionone",
    "assistant": "ladderanswerone",
    "user2": "ladderquestiontwo",
}

# Conversation shapes a harness may send: (name, [(role, sentinel key)]).
SHAPES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("user", (("user", "user"),)),
    ("system+user", (("system", "system"), ("user", "user"))),
    ("multi-turn", (("user", "user"), ("assistant", "assistant"), ("user", "user2"))),
    ("system+multi-turn", (("system", "system"), ("user", "user"), ("assistant", "assistant"), ("user", "user2"))),
)

# How each kind of sent text went to the model, as "your harness sends prompts <phrase>".
FORMAT_KINDS = {
    "template": "through the model's chat template",
    "template-twice": "through the chat template twice (a rendered prompt used as the user's message)",
    "no-generation-prompt": "through the chat template without the generation prompt that opens the reply",
    "other-format": "in a format that is not the model's chat template",
    "raw": "as raw text, without the chat template",
    "malformed": "with some of the template's markers, but not in the template's order or number",
}


def renderer_for_tokenizer(tokenizer) -> Renderer:
    """Render with the tokenizer's own chat template (as `apply_chat_template(tokenize=False)` does)."""

    def render(messages: Messages, add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    return render


def renderer_for_template(template: str, bos_token: str = "<s>", eos_token: str = "</s>") -> Renderer:
    """Render a bare Jinja chat template the way transformers does, with these special tokens.

    The template is given to `apply_chat_template` of a minimal tokenizer (public API only),
    so it renders exactly as it would in a model's tokenizer with these bos and eos tokens.
    """
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                        unk_token="<unk>")

    def render(messages: Messages, add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt,
                                             bos_token=bos_token, eos_token=eos_token)

    return render


def _conversation(shape: tuple[tuple[str, str], ...]) -> Messages:
    return [{"role": role, "content": SENTINELS[key]} for role, key in shape]


def _try_render(render: Renderer, messages: Messages, add_generation_prompt: bool,
                clock: datetime | None = None) -> str | None:
    """The rendering (None where the template refuses the shape); at `clock` for a template that writes the date."""
    try:
        with _clock(clock):
            text = render(messages, add_generation_prompt)
    except Exception:  # a template may refuse a shape (raise_exception): that shape is not supported
        return None
    if not isinstance(text, str) or any(text.count(m["content"]) != 1 for m in messages):
        return None
    return text


_CLOCK_LOCK = threading.Lock()


@contextlib.contextmanager
def _clock(clock: datetime | None) -> Iterator[None]:
    """While the block runs, transformers' `strftime_now` (the date a template writes) reads `clock`. It calls
    `datetime.now()` of its module, and takes no callable from the template's variables (they are made plain
    data), so the module's `datetime` is swapped for the block; where it cannot be, the clock is the real one."""
    utils = sys.modules.get("transformers.utils.chat_template_utils")
    real = getattr(utils, "datetime", None) if clock is not None else None
    if not (isinstance(real, type) and issubclass(real, datetime)):
        yield
        return

    class Fixed(real):
        @classmethod
        def now(cls, tz=None):
            return clock

    with _CLOCK_LOCK:
        utils.datetime = Fixed
        try:
            yield
        finally:
            utils.datetime = real


def _between(text: str, start: str | None, end: str | None) -> str:
    begin = 0 if start is None else text.index(start) + len(start)
    finish = len(text) if end is None else text.index(end, begin)
    return text[begin:finish]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _common_suffix(a: str, b: str) -> str:
    return _common_prefix(a[::-1], b[::-1])[::-1]


MARKER_ENDS = ">]}):"


def _shared_markers(a: str, b: str) -> str:
    """The common start of two renderings, whole markers only: where they differ inside a marker it ends
    before that marker. Phi-3 closes a user turn with "<|end|>\n", then opens the reply with "<|assistant|>"
    or, with no generation prompt, ends with "<|endoftext|>": the two share "<|end|>\n<|", of which only
    "<|end|>\n" closes the turn."""
    shared = _common_prefix(a, b)
    if len(shared) in (len(a), len(b)):
        return shared
    cut = len(shared)
    while cut and not (shared[cut - 1].isspace() or shared[cut - 1] in MARKER_ENDS):
        cut -= 1
    return shared[:cut]


@dataclass
class Pattern:
    shape: str
    add_generation_prompt: bool
    regex: str
    groups: list[str]  # sentinel keys in order

    def match(self, text: str) -> dict[str, str] | None:
        found = re.fullmatch(self.regex, text, flags=re.S)
        if found is None:
            return None
        return {f"{key}{i}": value for i, (key, value) in enumerate(zip(self.groups, found.groups()))}


@dataclass
class TemplateAnalysis:
    """What rendering a chat template tells about it (all strings as the template writes them)."""

    preamble: str = ""  # before the first user turn's opener: BOS, a default system prompt
    user_open: str = ""
    user_close: str = ""
    generation_prompt: str = ""
    assistant_close: str = ""  # what follows an assistant message
    end_of_turn: str | None = None  # the assistant_close's first non-blank piece, e.g. "<|im_end|>"
    supports_system: bool = False
    single_prompt: str = ""  # the rendering of one user message with the generation prompt
    patterns: list[Pattern] = field(default_factory=list)

    @property
    def markers(self) -> dict[str, str]:
        """The non-blank cores of the strings that frame a user turn and open the reply."""
        found = {}
        for name in ("user_open", "user_close", "generation_prompt"):
            core = getattr(self, name).strip()
            if core:
                found[name] = core
        return found

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("patterns")
        data["markers"] = self.markers
        data["shapes"] = sorted({p.shape for p in self.patterns})
        return data


class TemplateError(ValueError):
    """The template does not render a plain user message."""


def analyse(render: Renderer) -> TemplateAnalysis:
    """Turn markers, generation prompt and end-of-turn string of a template, found by rendering it."""
    user, answer, user2 = SENTINELS["user"], SENTINELS["assistant"], SENTINELS["user2"]
    single = _try_render(render, [{"role": "user", "content": user}], True)
    if single is None:
        raise TemplateError("the chat template does not render a single user message")
    analysis = TemplateAnalysis(single_prompt=single)
    before_user, after_user = single.split(user)
    closed = _try_render(render, [{"role": "user", "content": user}], False)
    if closed is not None:
        closed_after = closed.split(user)[1]
        analysis.user_close = _shared_markers(after_user, closed_after)
        analysis.generation_prompt = after_user[len(analysis.user_close):]
    else:
        analysis.generation_prompt = after_user
    pair = _try_render(render, [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], False)
    if pair is not None:
        analysis.assistant_close = pair.split(answer)[1]
        pieces = analysis.assistant_close.split()
        analysis.end_of_turn = pieces[0] if pieces else None
    triple = _try_render(render, [{"role": "user", "content": user}, {"role": "assistant", "content": answer},
                                  {"role": "user", "content": user2}], True)
    if triple is not None:
        between = _between(triple, answer, user2)
        close = _shared_markers(between, analysis.assistant_close) if pair is not None else ""
        opener = between[len(close):]
        analysis.user_open = _common_suffix(opener, before_user) if opener else ""
    else:
        analysis.user_open = before_user
    analysis.preamble = before_user[: len(before_user) - len(analysis.user_open)]
    system = _try_render(render, [{"role": "system", "content": SENTINELS["system"]},
                                  {"role": "user", "content": user}], True)
    analysis.supports_system = system is not None
    analysis.patterns = _patterns(render)
    return analysis


def _patterns(render: Renderer) -> list[Pattern]:
    patterns = []
    for name, shape in SHAPES:
        for add_generation_prompt in (True, False):
            texts = [_try_render(render, _conversation(shape), add_generation_prompt, clock) for clock in CLOCKS]
            if None in texts:
                continue
            keys = [key for _, key in shape]
            order = [key for _, key in sorted((texts[0].index(SENTINELS[key]), key) for key in keys)]
            pieces = [re.split("|".join(SENTINELS[key] for key in order), text) for text in texts]
            regex = "(.*?)".join(_literal(*between) for between in zip(*pieces))
            patterns.append(Pattern(name, add_generation_prompt, regex, order))
    return patterns


def _literal(first: str, second: str) -> str:
    """A regex for a piece of template text rendered at two clocks: the text itself, what differs between the
    two (the date the template writes) matching anything."""
    if first == second:
        return re.escape(first)
    head = _common_prefix(first, second)
    tail = _common_suffix(first[len(head):], second[len(head):])
    return re.escape(head) + ".*?" + re.escape(tail)


@dataclass
class Classification:
    """What a sent text went through, with the evidence for it."""

    kind: str
    detail: str
    shape: str | None = None
    user_content: str | None = None
    extra_leading_bos: int = 0
    reply_prefill: str | None = None  # text the harness wrote after the reply's opener (the reply begun for it)
    marker_counts: dict[str, int] = field(default_factory=dict)
    expected_marker_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _leading_count(text: str, token: str | None) -> int:
    if not token:
        return 0
    body, count = text.lstrip(), 0
    while body.startswith(token):
        count += 1
        body = body[len(token):].lstrip()
    return count


def _drop_leading(text: str, token: str, n: int) -> str:
    for _ in range(n):
        stripped = text.lstrip()
        text = stripped[len(token):] if stripped.startswith(token) else text
    return text


def _with_reply_prefill(sent: str, analysis: TemplateAnalysis, **tokens) -> Classification | None:
    """`sent` as the template's prompt followed by the beginning of the reply, written by the harness (an answer
    prefix such as "The answer is"): the template's own format, used on purpose. None when it is not that:
    the text before the reply's opener must classify as the template, and the text after it hold no marker."""
    opener = analysis.generation_prompt if analysis.generation_prompt.strip() else analysis.user_close
    at = sent.rfind(opener) if opener.strip() else -1
    if at < 0:
        return None
    head, begun = sent[: at + len(opener)], sent[at + len(opener):]
    end_of_reply = [analysis.end_of_turn, tokens.get("eos_token")]
    if not begun.strip() or any(core in begun for core in [*analysis.markers.values(), *end_of_reply] if core):
        return None
    found = classify(head, analysis, **tokens)
    if found.kind != "template":
        return None
    found.reply_prefill = begun
    found.detail = f"{found.detail}, the reply begun by your harness ({begun.strip()[:40]!r})"
    return found


def classify(sent: str, analysis: TemplateAnalysis, *, prompt: str | None = None, bos_token: str | None = None,
             eos_token: str | None = None) -> Classification:
    """Did `sent` (the exact text that reached the model) go through the template analysed?"""
    markers = analysis.markers
    counts = {name: sent.count(core) for name, core in markers.items()}
    expected = {name: analysis.single_prompt.count(core) for name, core in markers.items()}
    extra_bos = max(0, _leading_count(sent, bos_token) - _leading_count(analysis.single_prompt, bos_token))
    variants = [sent]
    if extra_bos:
        variants.append(_drop_leading(sent, bos_token, extra_bos))
    if eos_token and sent.rstrip().endswith(eos_token) and not analysis.single_prompt.rstrip().endswith(eos_token):
        variants += [v.rstrip()[: -len(eos_token)] for v in list(variants)]
    # A conversation's rendering also matches the one-message shape, its turns taken as the message; the
    # reading whose contents hold no markers is the template's own (a few-shot prompt is not template-twice).
    ranked = []
    for variant in variants:
        for pattern in analysis.patterns:
            groups = pattern.match(variant)
            if groups is not None:
                clean = not any(core in value for value in groups.values() for core in markers.values())
                ranked.append(((clean, pattern.add_generation_prompt), pattern, groups))
    best = max(ranked, key=lambda match: match[0]) if ranked else None
    found = best[1:] if best else None
    common = dict(extra_leading_bos=extra_bos, marker_counts=counts, expected_marker_counts=expected)
    if best is None or not best[0][0]:  # no clean reading: the template's prompt with the reply begun?
        prefilled = _with_reply_prefill(sent, analysis, prompt=prompt, bos_token=bos_token, eos_token=eos_token)
        if prefilled is not None:
            return prefilled
    if found is not None:
        pattern, groups = found
        user_content = [v for k, v in groups.items() if k.startswith("user")][-1]
        if any(core in user_content for core in markers.values()):
            return Classification("template-twice", FORMAT_KINDS["template-twice"], pattern.shape, user_content, **common)
        kind = "template" if pattern.add_generation_prompt or not analysis.generation_prompt.strip() \
            else "no-generation-prompt"
        return Classification(kind, FORMAT_KINDS[kind], pattern.shape, user_content, **common)
    if markers and all(counts[name] >= 2 * max(1, expected[name]) for name in markers):
        return Classification("template-twice", FORMAT_KINDS["template-twice"], None, None, **common)
    # without the marker that opens a user turn, whatever else is there is not this template
    opened = counts["user_open"] if "user_open" in markers else sum(counts.values())
    if not opened:
        wrapper = sent
        if prompt is not None and prompt.strip() and prompt.strip() in sent:
            wrapper = sent.replace(prompt.strip(), "", 1)
        elif prompt is not None:
            return Classification("other-format", FORMAT_KINDS["other-format"] + " (your prompt is not in what was sent)",
                                  None, None, **common)
        else:
            wrapper = ""  # the prompt is unknown (a transcript): a text without markers is taken as raw
        for token in (bos_token, eos_token):
            if token:
                wrapper = wrapper.replace(token, "")
        if wrapper.strip():
            detail = f"{FORMAT_KINDS['other-format']} (around your prompt: {wrapper.strip()[:80]!r})"
            return Classification("other-format", detail, None, prompt, **common)
        return Classification("raw", FORMAT_KINDS["raw"], None, prompt if prompt is not None else sent, **common)
    return Classification("malformed", FORMAT_KINDS["malformed"], None, None, **common)
