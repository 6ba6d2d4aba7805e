"""The `hf` backend: the model and tokenizer loaded in-process with transformers.

Loaded once per run through the run's `Resources` (`hf_model(ctx)`, which probes reach as
`model_backend(ctx)`), shared by every rung. `HFModel` implements the whole `Backend` contract
(`ladder.backends.contract`); probes use its methods, never `loaded_model` or `loaded_tokenizer`,
which are for the backend itself and for lending the instance to a harness. Everything here uses
public transformers 5 APIs.
"""

from __future__ import annotations

import contextlib

import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, NamedTuple

if TYPE_CHECKING:
    from ladder.probes.base import ProbeContext

from ladder.backends.contract import Backend, require

CAPABILITIES = frozenset({"generate", "logits", "hidden_states", "weights", "chat_template", "tokenize"})


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def token_progress(max_new_tokens: int) -> Any:
    """generate's `stopping_criteria`: stops nothing, and tells the running rung's progress each token
    (`token 5/24`), so that a long generation on a big model is seen moving."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from ladder.probes.base import step_progress

    class Reporting(StoppingCriteria):
        step = 0

        def __call__(self, input_ids, scores, **kwargs):
            self.step += 1
            step_progress("token", min(self.step, max_new_tokens), max_new_tokens, within_phase=True)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Reporting()])


# generate's settings that change which token greedy decoding picks, at their neutral values. ladder's own
# replies keep the checkpoint's (a server applies its generation_config.json too: Qwen2.5-Instruct ships a
# repetition penalty), so only a reply generated without any is remembered as greedy; degeneration's free
# run measures the model itself and passes these
PURE_GREEDY: dict[str, Any] = {
    "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0,
    "min_new_tokens": None, "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "sequence_bias": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
}


def picks_top_1(options: dict[str, Any], config: Any) -> bool:
    """Whether generate with these options over the model's generation `config` decodes each step's top-1:
    every setting of PURE_GREEDY, passed or the config's, at its neutral value (None where that is 0 or 1)."""
    for key, neutral in PURE_GREEDY.items():
        value = options[key] if key in options else getattr(config, key, None)
        if value not in (neutral, None) and not (neutral is None and not value):
            return False
    return True


class Remembered(NamedTuple):
    """A continuation remembered after a prompt (`HFModel.generated_scores`): its ids, each one's
    log-probability, and whether each is the model's greedy (top-1) choice there."""

    continuation: tuple[int, ...]
    logprobs: list[float]
    hits: tuple[bool, ...]
    entropy: tuple[float, ...] = ()  # a generated reply's next-token entropy at each step

    @property
    def greedy(self) -> int:
        """How many of its first ids are greedy choices: the start of the model's greedy reply."""
        return next((i for i, hit in enumerate(self.hits) if not hit), len(self.hits))


def cut_at_stop(ids: list[int], stops: set[int]) -> list[int]:
    """`ids` up to and including the first stop id (all of them when none occurs)."""
    for index, token in enumerate(ids):
        if token in stops:
            return ids[:index + 1]
    return list(ids)


class GreedyWatch:
    """A logits processor added to a lent harness's greedy `generate` call (`HFModel.watch_greedy`): at each step
    it keeps every row's top-1 id, its log-probability and the entropy of the distribution, and returns the
    scores unchanged. After the call, each row whose reply is those top-1 ids step by step is remembered by the
    lender as the model's greedy reply to the row's prompt (left-padded or unpadded rows only)."""

    def __init__(self, lender: "HFModel", eos: set[int]):
        self.lender, self.eos = lender, eos
        self.steps: list[tuple[list[int], list[float], list[float]]] = []

    def __call__(self, input_ids, scores):
        import torch

        logprobs = torch.log_softmax(scores.float(), dim=-1)
        top = logprobs.max(dim=-1)
        spread = -(logprobs.exp() * logprobs).nan_to_num().sum(-1)
        self.steps.append((top.indices.tolist(), top.values.tolist(), spread.tolist()))
        return scores

    def added_to(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from transformers import LogitsProcessorList

        return {**kwargs, "logits_processor": LogitsProcessorList([self])}

    def remember(self, record: dict[str, Any]) -> None:
        """Remember the call's replies (the tap's `record` of it) that are its greedy top-1 ids."""
        rows, masks, replies = record.get("input_ids"), record.get("attention_mask"), record.get("output_ids")
        if not rows or replies is None or len(replies) != len(rows) or (masks is None and len(rows) > 1):
            return
        for row, (ids, mask, out) in enumerate(zip(rows, masks or [None] * len(rows), replies)):
            if mask is not None and mask != sorted(mask):
                continue  # padded on the right (or holes): the row's reply is not the prompt's
            reply = cut_at_stop(out, self.eos)
            if not reply or len(reply) > len(self.steps) or \
                    any(self.steps[t][0][row] != token for t, token in enumerate(reply)):
                continue
            prompt = list(ids) if mask is None else [i for i, m in zip(ids, mask) if m]
            self.lender._remember(prompt, reply, [self.steps[t][1][row] for t in range(len(reply))],
                                  hits=[True] * len(reply), replace=False,
                                  entropy=[self.steps[t][2][row] for t in range(len(reply))])


@dataclass
class HFModel(Backend):
    """A causal LM and its tokenizer, as ladder itself runs them (greedy, left padding, masked)."""

    path: str
    loaded_model: Any
    loaded_tokenizer: Any
    loading_info: dict[str, Any] = field(default_factory=dict)
    capabilities: frozenset[str] = CAPABILITIES
    requested_dtype: str = "auto"  # what ladder asked from_pretrained for (lending compares a harness's ask)
    as_loaded: dict[str, Any] | None = None  # `lend_state()` right after loading: lent only while it holds
    offload_folder: Any = None  # the temporary folder accelerate offloads to under `max_memory`
    # per prompt, a continuation's per-token log-probabilities and greedy hits: the replies `generate` produced
    # and the continuations scored, so that `score` or `greedy_agreement` of one (or of a prefix) costs no second
    # forward pass and a greedy reply is generated once (`greedy_replies`)
    generated_scores: dict[tuple[int, ...], Remembered] = field(default_factory=dict, repr=False)
    generated_scores_state: tuple | None = field(default=None, repr=False)  # `_scoring_state()` they hold for
    weight_bytes: int | None = field(default=None, repr=False)  # the weights' size, once `rows_per_pass` asks
    slicing: bool = field(default=True, repr=False)  # ladder's own passes slice outsized MLPs (`network`)
    sliced: bool = field(default=False, repr=False)  # whether `slice_position_wise` is installed
    name: ClassVar[str] = "hf"
    how_to_reach: ClassVar[str] = "give --model DIR"

    @staticmethod
    def reaches(case: Any) -> bool:
        """A case reaches the model in-process when it names the checkpoint."""
        return bool(getattr(case, "model", None))

    @classmethod
    def load(cls, path: str, *, device: str | None = None, dtype: str = "auto",
             trust_remote_code: bool = False, max_memory: str | None = None) -> "HFModel":
        """The checkpoint at `path` with its tokenizer, in eval mode. `device="auto"` shards it over the GPUs
        (accelerate); `max_memory` (`0=20GiB,cpu=48GiB`) caps what each device holds, on a CPU-only machine
        too, and offloads the rest to a temporary folder on disk."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ladder.adapters import adapter_to_merge, merge_adapter, tokenizer_folder
        from ladder.probes.base import count_cost, install_forward_cancel_point

        install_forward_cancel_point()
        count_cost("model_loads")
        _quiet_transformers()
        torch.set_num_threads(max(1, torch.get_num_threads()))
        source, gguf = gguf_source(path)
        adapter = adapter_to_merge(path)
        if adapter is not None:  # a LoRA adapter folder: its base, with the adapter merged in below
            source = adapter[1]
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(path, source) if adapter is not None else source,
                                                  trust_remote_code=trust_remote_code, **gguf)
        placement: dict[str, Any] = {**gguf}
        offload = None
        if max_memory:
            from ladder.case import max_memory_map

            offload = tempfile.TemporaryDirectory(prefix="ladder-offload-")
            placement.update(device_map="auto", max_memory=max_memory_map(max_memory), offload_folder=offload.name)
        elif device == "auto" and torch.cuda.is_available():
            placement["device_map"] = "auto"  # shards over the GPUs, offloads to CPU what does not fit (accelerate)
        model, info = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or "auto", output_loading_info=True,
                                                           trust_remote_code=trust_remote_code, **placement)
        if adapter is not None:
            info = {**(info or {}), "adapter_merged": merge_adapter(model, path), "base_model": source}
        if "device_map" not in placement:
            model.to("cpu" if device in (None, "auto") else device)
        model.eval()
        loaded = cls(path=path, loaded_model=model, loaded_tokenizer=tokenizer, loading_info=info or {},
                     requested_dtype=str(dtype or "auto"))
        loaded.offload_folder = offload
        loaded.as_loaded = loaded.lend_state()
        return loaded

    @property
    def device(self):
        """Where inputs go: the first parameter's device (the CPU for a model offloaded from the start)."""
        import torch

        device = next(self.loaded_model.parameters()).device
        return device if device.type != "meta" else torch.device("cpu")

    def close(self) -> None:
        self.loaded_model = None
        self.loaded_tokenizer = None
        if self.offload_folder is not None:
            self.offload_folder.cleanup()
            self.offload_folder = None

    def fingerprint(self) -> dict[str, Any]:
        """What a probe must leave as it found it (cheap: no pass over all the weights): dtype, device,
        train/eval mode, attention implementation, parameter count and a checksum of a few weights."""
        import torch

        if self.loaded_model is None:
            return {}
        params = list(self.loaded_model.parameters())
        names = [name for name, _ in self.loaded_model.named_parameters()]
        picked = {names[0], names[len(names) // 2], names[-1]} if names else set()
        weights = named_weights(self.loaded_model) if is_offloaded(self.loaded_model) else self.loaded_model.named_parameters()
        with torch.no_grad():
            sums = [round(float(p.detach().flatten()[:: max(1, p.numel() // 256)].double().sum()), 6)
                    for name, p in weights if name in picked]
        return {"dtype": str(params[0].dtype) if params else None, "device": str(self.device) if params else None,
                "training": bool(self.loaded_model.training),
                "attention": getattr(self.loaded_model.config, "_attn_implementation", None),
                "parameters": len(params), "weights": sums}

    # ---- lending the loaded instance to an in-process harness ---------------------------

    def lends_to(self, cls: type, args: tuple, kwargs: dict[str, Any]) -> bool:
        """Whether `cls.from_pretrained(self.path, *args, **kwargs)` from a harness would give a model equal to
        this instance, so the harness can be handed it instead of loading a second copy: the same class, no
        positional extras, and only load options that change nothing here (the same dtype, a placement on the one
        device this instance lies on, the same attention implementation, the checkpoint's own config)."""
        model = self.loaded_model
        if model is None or args or type(model) is not cls:
            return False
        devices = {str(p.device) for p in model.parameters()}
        if len(devices) != 1 or "meta" in devices:
            return False  # sharded or offloaded: a harness's load would not lie the same way
        if self.as_loaded is None or self.lend_state() != self.as_loaded or model.training:
            return False  # not as from_pretrained gave it any more
        if self.loading_info.get("adapter_merged"):
            return False  # ladder merged the adapter folder: the harness's own load applies it (or fails to)
        for key, value in kwargs.items():
            if key in ("revision", "adapter_kwargs", "subfolder") and value in (None, "", "main", {}):
                continue
            if key in ("trust_remote_code", "local_files_only", "low_cpu_mem_usage", "use_safetensors",
                       "cache_dir", "token", "force_download", "proxies", "_from_auto"):
                continue  # where and how files are fetched, or that an Auto class called: not what is loaded
            if value is None and key not in ("dtype", "torch_dtype"):
                continue  # an option left at its default
            if key in ("dtype", "torch_dtype"):
                if value in (None, "auto") and self.requested_dtype == "auto":
                    continue
                if value not in (None, "auto") and str(value).replace("torch.", "") == str(model.dtype).replace(
                        "torch.", ""):
                    continue
                return False
            if key == "device_map":
                continue  # compared below
            if key == "attn_implementation" and value == getattr(model.config, "_attn_implementation", None):
                continue
            if key == "config" and not isinstance(value, (str, os.PathLike)) and \
                    type(value) is type(model.config) and _config_dict(value) == _config_dict(model.config):
                continue
            return False
        return device_placement(kwargs.get("device_map")) == devices.pop()

    def lend_state(self) -> dict[str, Any]:
        """What a harness must leave as it found it on a lent instance: the fingerprint, config and
        generation config (the train/eval mode is put back, not compared)."""
        generation = getattr(self.loaded_model, "generation_config", None)
        return {"fingerprint": {k: v for k, v in self.fingerprint().items() if k != "training"},
                "config": _config_dict(self.loaded_model.config),
                "generation_config": generation.to_dict() if generation is not None else None}

    # ---- the contract (`Backend`) ------------------------------------------------------

    def has_chat_template(self) -> bool:
        return bool(getattr(self.loaded_tokenizer, "chat_template", None))

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        require(self, "chat_template")
        encoded = self.loaded_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                            tokenize=True)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        require(self, "tokenize")
        return list(self.loaded_tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def detokenize(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        require(self, "tokenize")
        return self.loaded_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    @property
    def tokenizer(self) -> Any:
        require(self, "tokenize")
        return self.loaded_tokenizer

    def stop_ids(self) -> set[int]:
        """The eos ids generation stops on (generation_config, else config, else tokenizer)."""
        require(self, "generate")
        for source in (getattr(self.loaded_model, "generation_config", None), self.loaded_model.config):
            eos = getattr(source, "eos_token_id", None) if source is not None else None
            if eos is not None:
                return set(eos if isinstance(eos, (list, tuple)) else [eos])
        eos = self.loaded_tokenizer.eos_token_id
        return {eos} if eos is not None else set()

    @property
    def generation_config(self) -> Any:
        require(self, "generate")
        return getattr(self.loaded_model, "generation_config", None)

    @property
    def network(self) -> Any:
        """The loaded network for a probe's own forward passes: its MLPs run at most `tokens_per_pass` tokens at
        a time (`slice_position_wise`; the same values), except while a harness is lent it (`unsliced`)."""
        from ladder.internals import slice_position_wise

        require(self, "weights", "hidden_states", "logits")
        if not self.sliced:
            slice_position_wise(self.loaded_model, lambda: self.tokens_per_pass() if self.slicing else None)
            self.sliced = True
        return self.loaded_model

    @contextlib.contextmanager
    def unsliced(self):
        """While the block runs, the network computes as transformers wrote it (a lent harness's path)."""
        before, self.slicing = self.slicing, False
        try:
            yield self
        finally:
            self.slicing = before

    def padded(self, batch: list[list[int]], padding_side: str = "left", pad_token_id: int | None = None):
        """(input_ids, attention_mask, pad id) of `batch` padded on `padding_side`, on the model's device."""
        import torch

        pad = pad_token_id if pad_token_id is not None else self.loaded_tokenizer.pad_token_id
        if pad is None:
            eos = self.loaded_tokenizer.eos_token_id
            pad = eos if eos is not None else 0
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            if ids:
                span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
                input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
                mask[row, span] = 1
        return input_ids.to(self.device), mask.to(self.device), pad

    # a pass's activations may take this share of the weights' bytes (and at least ACTIVATION_FLOOR)
    ACTIVATION_SHARE = 0.05
    ACTIVATION_FLOOR = 64 * 2**20

    def tokens_per_pass(self) -> int:
        """How many tokens one forward pass holds: the widest layer's activations (the MLP's intermediate, about
        four live copies per token) within ACTIVATION_SHARE of the weights' bytes. A real checkpoint runs a probe's
        prompts in one pass; a model with outsized layers in several, so its peak memory stays near its weights."""
        model = self.loaded_model
        if self.weight_bytes is None:
            self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        config = getattr(model, "config", None)
        widest = max(getattr(config, "intermediate_size", None) or 0, 4 * (getattr(config, "hidden_size", 0) or 0))
        per_token = 4 * widest * max(2, next(model.parameters()).element_size())
        return max(1, int(max(self.ACTIVATION_SHARE * self.weight_bytes, self.ACTIVATION_FLOOR) // max(1, per_token)))

    def prefill_options(self, input_ids) -> dict[str, int]:
        """generate's options for this padded prompt batch: `prefill_chunk_size` when the prompt is wider than a
        pass holds (`tokens_per_pass`), so its prefill runs in slices of the sequence (the same replies)."""
        if input_ids.numel() <= self.tokens_per_pass():
            return {}
        return {"prefill_chunk_size": max(1, self.tokens_per_pass() // input_ids.shape[0])}

    def _in_passes(self, lengths: list[int], run: Callable[[int, int], list[Any]]) -> list[Any] | None:
        """`run(start, stop)` over rows of these lengths a few rows at a time (`tokens_per_pass`), the results
        in order; None when one pass holds them all."""
        rows = max(1, self.tokens_per_pass() // max(max(lengths, default=1), 1))
        if len(lengths) <= rows:
            return None
        return [result for start in range(0, len(lengths), rows)
                for result in run(start, min(start + rows, len(lengths)))]

    def generate(self, batch: list[list[int]], *, max_new_tokens: int = 32, stop_ids: set[int] | None = None,
                 padding_side: str = "left", pad_token_id: int | None = None, attention_mask: bool = True,
                 **settings: Any) -> list[list[int]]:
        import torch

        from ladder.probes.base import count_cost

        require(self, "generate")
        input_ids, mask, pad = self.padded(batch, padding_side, pad_token_id)
        stops = set(stop_ids) if stop_ids is not None else self.stop_ids()
        options = {"do_sample": False, "max_new_tokens": max_new_tokens, "pad_token_id": pad,
                   "stopping_criteria": token_progress(max_new_tokens)}
        if stop_ids is not None:
            options["eos_token_id"] = sorted(stops) or None
        if attention_mask:
            options["attention_mask"] = mask
        options.update(self.prefill_options(input_ids))
        options.update(settings)
        # the model's own greedy pass, as score() would see it: masked, left-padded (or one row), not sampled
        remember = (attention_mask and (padding_side == "left" or len(batch) == 1)
                    and picks_top_1(options, getattr(self.loaded_model, "generation_config", None)))
        if remember:
            options.update(output_logits=True, return_dict_in_generate=True)
        with torch.no_grad():
            out = self.loaded_model.generate(input_ids=input_ids, **options)
        sequences = out.sequences if remember else out
        replies = [cut_at_stop(row, stops) for row in sequences[:, input_ids.shape[1]:].tolist()]
        if remember:
            self._remember_scores(batch, replies, out.logits)
        count_cost("generate_calls")
        count_cost("tokens_generated", sum(len(reply) for reply in replies))
        return replies

    def greedy_replies(self, batch: list[list[int]], *, max_new_tokens: int, stop_ids: set[int]) -> list[list[int]]:
        """The greedy reply to each prompt, generated once per run: the greedy start of a continuation already
        remembered for the same prompt (`_remember`) is reused when it reaches one of `stop_ids` or
        `max_new_tokens`, and continued when it is shorter. Greedy decoding is causal, so the first n tokens of a
        longer reply are the reply generated with n; prompt-format, generation-config, harness-control and
        special-tokens ask for the template path's replies with their own limits."""
        stops = set(stop_ids)
        replies: list[list[int] | None] = [None] * len(batch)
        todo: list[tuple[int, list[int]]] = []
        for index, prompt in enumerate(batch):
            cut, whole = self._remembered_start(prompt, max_new_tokens, stops)
            if whole:
                replies[index] = cut
            else:
                todo.append((index, cut))
        if todo:
            fresh = self.generate([batch[index] + begun for index, begun in todo], stop_ids=stops,
                                  max_new_tokens=max(max_new_tokens - len(begun) for _, begun in todo))
            for (index, begun), new in zip(todo, fresh):
                if begun:
                    self._join_remembered(batch[index], begun)
                replies[index] = (begun + new)[:max_new_tokens]
        return [reply or [] for reply in replies]

    # generate options under which a watched call's tokens are not read off its scores alone (a processor or
    # stopping rule of the harness's own, another decoding scheme), or whose rows are not the prompts' replies
    UNWATCHED = ("logits_processor", "stopping_criteria", "stop_strings", "prefix_allowed_tokens_fn",
                 "assistant_model", "prompt_lookup_num_tokens", "inputs_embeds", "negative_prompt_ids",
                 "custom_generate", "watermarking_config")

    def watch_greedy(self, named: dict[str, Any], effective: dict[str, Any] | None) -> "GreedyWatch | None":
        """A watch over a lent harness's `generate` call (its arguments by name, its effective generation
        config), when the call decodes this instance greedily: it records each step's scores, and the replies
        it produced are then remembered as this model's greedy replies (`GreedyWatch.remember`). None when the
        call may pick other than the top-1, or the network is in another state than ladder's own passes."""
        import torch

        if effective is None or not picks_top_1(effective, None) or self.loaded_model.training:
            return None
        if any(named.get(key) not in (None, False) for key in self.UNWATCHED) or effective.get("stop_strings"):
            return None
        if (effective.get("num_return_sequences") or 1) != 1 or torch.is_autocast_enabled(self.device.type):
            return None
        from ladder.harness.compare import as_id_list

        return GreedyWatch(self, set(as_id_list(effective.get("eos_token_id"))))

    def remembered_greedy(self, prompt: list[int], *, max_new_tokens: int,
                          stop_ids: set[int]) -> tuple[list[int], list[float]] | None:
        """The greedy reply to `prompt` (cut after a stop id, at most `max_new_tokens`) and its next-token
        entropy at each step, when a reply generated earlier in this run covers it (None: generate it)."""
        reply, whole = self._remembered_start(prompt, max_new_tokens, set(stop_ids))
        known = self._kept(prompt)
        if not whole or known is None or len(known.entropy) < len(reply):
            return None
        return reply, list(known.entropy[:len(reply)])

    def _remembered_start(self, prompt: list[int], max_new_tokens: int, stops: set[int]) -> tuple[list[int], bool]:
        """The remembered greedy start of prompt's reply cut after a stop id and at `max_new_tokens`, and
        whether that is the whole reply (it reaches a stop id or the limit) rather than a start to continue."""
        known = self._remembered_reply(prompt)
        cut = cut_at_stop(known, stops) if known else []
        return cut[:max_new_tokens], bool(known) and ((bool(cut) and cut[-1] in stops) or len(cut) >= max_new_tokens)

    MAX_REMEMBERED = 1024

    def _remember_scores(self, batch: list[list[int]], replies: list[list[int]], step_logits) -> None:
        import torch

        values: list[list[float]] = [[] for _ in replies]
        entropy: list[list[float]] = [[] for _ in replies]
        for step, logits in enumerate(step_logits):
            rows = [r for r, reply in enumerate(replies) if len(reply) > step]
            if not rows:
                break
            logprobs = torch.log_softmax(logits[rows].float(), dim=-1)
            chosen = torch.tensor([replies[r][step] for r in rows], device=logprobs.device)
            spread = -(logprobs.exp() * logprobs).sum(-1)
            for r, value, h in zip(rows, logprobs.gather(1, chosen[:, None])[:, 0].tolist(), spread.tolist()):
                values[r].append(value)
                entropy[r].append(h)
        for prompt, reply, row, row_entropy in zip(batch, replies, values, entropy):
            self._remember(prompt, reply, row, hits=[True] * len(reply), entropy=row_entropy)

    def _remember(self, prompt: list[int], cont: list[int], values: list[float], hits: list[bool],
                  replace: bool = True, entropy: list[float] = ()) -> None:
        """Keep `cont`'s per-token log-probabilities after `prompt`, whether each token is the model's greedy
        choice (all of a generated reply's are) and, for a generated reply, each step's entropy, for the
        network's current `_scoring_state`. Without `replace`, a continuation that does not extend the one
        kept for the prompt is not kept."""
        if not cont:
            return
        state = self._scoring_state()
        if self.generated_scores_state != state:
            self.generated_scores.clear()
            self.generated_scores_state = state
        key = tuple(prompt)
        kept = self.generated_scores.get(key)
        if not replace and kept is not None and (len(cont) <= len(kept.continuation)
                                                 or tuple(cont[:len(kept.continuation)]) != kept.continuation):
            return
        self.generated_scores.pop(key, None)
        self.generated_scores[key] = Remembered(tuple(cont), list(values), tuple(hits), tuple(entropy))
        while len(self.generated_scores) > self.MAX_REMEMBERED:
            self.generated_scores.pop(next(iter(self.generated_scores)))

    def _kept(self, prompt: list[int]) -> Remembered | None:
        """What is remembered for `prompt` in the network's current state (None: nothing, or another state)."""
        if not self.generated_scores or self.generated_scores_state != self._scoring_state():
            return None
        return self.generated_scores.get(tuple(prompt))

    def _remembered_reply(self, prompt: list[int]) -> list[int] | None:
        """The greedy start of the continuation remembered for `prompt` (None: nothing remembered)."""
        known = self._kept(prompt)
        return list(known.continuation[:known.greedy]) if known and known.greedy else None

    def _join_remembered(self, prompt: list[int], begun: list[int]) -> None:
        """After `begun` (the remembered start of prompt's reply) was continued: remember the whole reply."""
        head = self.generated_scores.get(tuple(prompt))
        tail = self.generated_scores.pop(tuple(prompt + begun), None)
        if head and tail and list(head.continuation[:len(begun)]) == begun:
            entropy = head.entropy[:len(begun)] + tail.entropy if len(head.entropy) >= len(begun) else ()
            self._remember(prompt, begun + list(tail.continuation), head.logprobs[:len(begun)] + tail.logprobs,
                           list(head.hits[:len(begun)] + tail.hits), entropy=list(entropy))

    def _scoring_state(self) -> tuple:
        """What remembered scores depend on besides the weights: the mode, the dtype and the hooks a probe
        puts on the network for a while (layers bypassed, blocks cast), which change what it computes."""
        model = self.loaded_model
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        return model.training, str(model.dtype), hooks

    def _remembered(self, prompt: list[int], cont: list[int]) -> tuple[list[float], list[bool]] | None:
        """(log-probabilities, greedy hits) of `cont` after `prompt` when a remembered continuation starts with
        it (None: it must be scored)."""
        known = self._kept(prompt)
        if known is None or not cont or tuple(cont) != known.continuation[:len(cont)]:
            return None
        return list(known.logprobs[:len(cont)]), list(known.hits[:len(cont)])

    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        require(self, "logits")
        return self._known_or_scored(pairs)[0]

    def greedy_agreement(self, pairs: list[tuple[list[int], list[int]]]) -> tuple[list[list[float]], list[list[bool]]]:
        require(self, "logits")
        return self._known_or_scored(pairs)

    def _known_or_scored(self, pairs: list[tuple[list[int], list[int]]]) -> tuple[list[list[float]], list[list[bool]]]:
        """Each pair's (log-probabilities, greedy hits): remembered where a generated reply or a scored
        continuation covers it, else from one teacher-forced pass over the rest."""
        known = [self._remembered(prompt, cont) for prompt, cont in pairs]
        todo = [pair for pair, found in zip(pairs, known) if found is None]
        computed = iter(zip(*self._scored(todo)) if todo else [])
        both = [found if found is not None else next(computed) for found in known]
        return [list(values) for values, _ in both], [list(hits) for _, hits in both]

    def _scored(self, pairs: list[tuple[list[int], list[int]]]) -> tuple[list[list[float]], list[list[bool]]]:
        """`_teacher_forced`, its results remembered (memorization's samples are the references that
        degeneration scores again)."""
        values, greedy = self._teacher_forced(pairs)
        for (prompt, cont), row, hits in zip(pairs, values, greedy):
            self._remember(prompt, cont, row, hits=hits, replace=False)
        return values, greedy

    def _teacher_forced(self, pairs: list[tuple[list[int], list[int]]]) -> tuple[list[list[float]], list[list[bool]]]:
        """One forward pass over prompt + continuation: each continuation token's log-probability, and
        whether it is the top-1 there."""
        import torch

        import inspect

        passes = self._in_passes([len(prompt) + len(cont) for prompt, cont in pairs],
                                 lambda start, stop: list(zip(*self._teacher_forced(pairs[start:stop]))))
        if passes is not None:
            return [values for values, _ in passes], [greedy for _, greedy in passes]
        joined = [prompt + cont for prompt, cont in pairs]
        input_ids, mask, _ = self.padded(joined)
        # left-padded, every continuation ends the row: only the last positions' logits are needed (a real
        # vocabulary makes the full [batch, width, vocab] float tensor the biggest allocation of the pass)
        keep = max(len(cont) for _, cont in pairs) + 1
        options = {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(
            self.loaded_model.forward).parameters else {}
        with torch.no_grad():
            logits = self.loaded_model(input_ids=input_ids, attention_mask=mask, **options).logits
        width = input_ids.shape[1]
        logprobs = torch.log_softmax(logits[:, -keep:].float(), dim=-1)  # where logits_to_keep is unknown too
        offset = width - keep  # the row position of logprobs' first column
        top = logprobs.argmax(dim=-1)
        values, greedy = [], []
        for row, (_, cont) in enumerate(pairs):
            positions = torch.arange(width - len(cont), width, device=logprobs.device)
            targets = input_ids[row, positions]
            values.append(logprobs[row, positions - 1 - offset, targets].tolist())
            greedy.append((top[row, positions - 1 - offset] == targets).tolist())
        return values, greedy


def _config_dict(config) -> dict[str, Any]:
    """A model config as a dict, without the load-time bookkeeping transformers adds."""
    data = config.to_dict()
    for key in ("_name_or_path", "transformers_version", "_attn_implementation_autoset"):
        data.pop(key, None)
    return data


def named_weights(model) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of every parameter of `model` (as `named_parameters()` names them), with its values also
    where accelerate offloaded it (`max_memory`, `device_map="auto"`: the module holds meta tensors, the values
    sit on the CPU or disk). An offloaded module is brought to the CPU while its tensors are yielded and
    dropped after: use each tensor before asking for the next."""
    import torch

    try:
        from accelerate.utils import align_module_device, has_offloaded_params
    except ImportError:  # no accelerate: nothing can be offloaded
        yield from model.named_parameters()
        return
    wanted = {name for name, _ in model.named_parameters()}

    def walk(prefix: str, module) -> Iterator[tuple[str, Any]]:
        if has_offloaded_params(module):
            with align_module_device(module, torch.device("cpu")):
                for name, tensor in module.named_parameters():
                    full = f"{prefix}{name}"
                    if full in wanted:
                        wanted.discard(full)
                        yield full, tensor
            return
        for name, tensor in module.named_parameters(recurse=False):
            if f"{prefix}{name}" in wanted:
                wanted.discard(f"{prefix}{name}")
                yield f"{prefix}{name}", tensor
        for child_name, child in module.named_children():
            yield from walk(f"{prefix}{child_name}.", child)

    yield from walk("", model)


AUTO_PLACEMENTS = ("auto", "balanced", "balanced_low_0", "sequential")


def device_placement(device_map: Any) -> str | None:
    """The one device `from_pretrained(device_map=...)` puts a whole model on, as torch names it ("cpu",
    "cuda:0", "mps"), or None where it may spread it over several: no device_map is the CPU; "auto" is the only
    GPU, else Apple's GPU, else the CPU (accelerate's choice for a model that fits)."""
    import torch

    if device_map is None:
        return "cpu"
    if isinstance(device_map, dict):
        return device_placement(device_map[""]) if set(device_map) == {""} else None
    if isinstance(device_map, str) and device_map in AUTO_PLACEMENTS:
        if torch.cuda.is_available():
            return "cuda:0" if torch.cuda.device_count() == 1 else None
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    try:
        device = torch.device(f"cuda:{device_map}" if isinstance(device_map, int) else device_map)
    except (TypeError, RuntimeError, ValueError):
        return None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return str(device)


def is_offloaded(model) -> bool:
    """Whether accelerate holds some of `model`'s weights off the module (meta tensors; `max_memory`)."""
    return any(p.device.type == "meta" for p in model.parameters())


def weights_by_name(model, names: set[str] | None = None) -> dict[str, Any]:
    """name -> values of `model`'s parameters (those in `names`, else all): the parameters themselves, or CPU
    copies where accelerate offloaded them."""
    if not is_offloaded(model):
        return {name: p for name, p in model.named_parameters() if names is None or name in names}
    return {name: p.detach().clone() for name, p in named_weights(model) if names is None or name in names}


def weight_values(model, tensors: list[Any]) -> list[Any]:
    """The values of some of `model`'s parameters, given as the parameter objects (e.g.
    `model.get_input_embeddings().weight`; None stays None), as `weights_by_name` gives them."""
    names = {id(tensor): name for name, tensor in model.named_parameters()}
    found = weights_by_name(model, {names[id(t)] for t in tensors if t is not None and id(t) in names})
    return [None if t is None else found.get(names.get(id(t)), t) for t in tensors]


def hf_model(ctx: "ProbeContext", which: str = "model") -> HFModel:
    """The run's shared `model` (or `base`) of the case, loaded on first use."""
    path = getattr(ctx.case, which)
    if not path:
        from ladder.probes.base import skip

        skip(f"needs --{which} PATH (case key `{which}`)")
    def load() -> HFModel:
        size = weights_size(path)
        if size:
            ctx.progress(f"loading the {which} ({size / 1e9:.2f} GB of weights on disk; ladder holds one copy, "
                         f"about {size * 1.2 / 1e9:.1f} GB in memory at the stored dtype)", None)
        return HFModel.load(path, device=ctx.case.device, dtype=ctx.case.dtype,
                            trust_remote_code=ctx.case.trust_remote_code, max_memory=ctx.case.max_memory)

    return ctx.resources.get(f"hf:{which}", load)


def weights_size(path: str) -> int:
    """Bytes of the weight files in a model folder (0 when it is not a folder)."""
    import os

    if not os.path.isdir(path):
        return 0
    return sum(entry.stat().st_size for entry in os.scandir(path)
               if entry.is_file() and entry.name.endswith(WEIGHT_FILES))


WEIGHT_FILES = (".safetensors", ".bin", ".gguf")


def gguf_source(path: str) -> tuple[str, dict[str, str]]:
    """`from_pretrained`'s folder and keywords for `path`: a GGUF file is read from its folder with `gguf_file`
    (transformers dequantizes it; needs the `gguf` package)."""
    if path.endswith(".gguf") and os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), {"gguf_file": os.path.basename(path)}
    return path, {}


def local_checkpoint(path: str) -> str | None:
    """The folder `from_pretrained(path)` reads: the path itself, else a hub id's snapshot already in the local
    cache (never fetched); None when neither is there."""
    if os.path.isdir(path):
        return path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception:  # not a hub id, or not in the cache
        return None


def same_weight_files(a: str, b: str, samples: int = 64, chunk: int = 1 << 16) -> bool:
    """Whether two checkpoint folders hold the same weights: weight files of the same names and sizes, with the
    same bytes at `samples` places spread over each (a fine-tune changes nearly every tensor, a merged adapter
    a share of them: 64 places miss a change to a tenth of the bytes once in 800)."""
    def files(folder: str) -> dict[str, int]:
        return {entry.name: entry.stat().st_size for entry in os.scandir(folder)
                if entry.is_file() and entry.name.endswith(WEIGHT_FILES)}

    if not (os.path.isdir(a) and os.path.isdir(b)):
        return False
    found = files(a)
    if not found or found != files(b):
        return False
    for name, size in found.items():
        with open(os.path.join(a, name), "rb") as left, open(os.path.join(b, name), "rb") as right:
            for k in range(samples):
                left.seek(size * k // samples)
                right.seek(size * k // samples)
                if left.read(chunk) != right.read(chunk):
                    return False
    return True


class StreamedWeights:
    """A checkpoint's tensors read one at a time from its safetensors files (`safe_open`), never a second
    model in memory: `names()`, `get(name)` (None when absent). Tied heads saved once are found under the
    name the model uses for them. Raises OSError when the folder holds no safetensors file."""

    def __init__(self, folder: str):
        import glob
        import os

        from safetensors import safe_open

        self._files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
        if not self._files:
            raise OSError(f"{folder} holds no .safetensors file")
        self._where: dict[str, str] = {}
        for path in self._files:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():
                    self._where.setdefault(name, path)

    def names(self) -> list[str]:
        return list(self._where)

    def get(self, name: str):
        from safetensors import safe_open

        path = self._where.get(name)
        if path is None:
            return None
        with safe_open(path, framework="pt") as handle:
            return handle.get_tensor(name)

    def find(self, suffix: str):
        """The first tensor whose name ends with `suffix` (e.g. `embed_tokens.weight`), or None."""
        return next((self.get(name) for name in self._where if name.endswith(suffix)), None)


def streamed_base(ctx, model):
    """The base's weights as `StreamedWeights` when its safetensors name most of the model's parameters the
    same way (then no second model is loaded), else None."""
    try:
        weights = StreamedWeights(ctx.case.base)
    except Exception:  # no safetensors (a .bin checkpoint, a hub id): the base is loaded instead
        return None
    names = set(weights.names())
    tuned = [name for name, _ in model.named_parameters()]
    return weights if tuned and sum(name in names for name in tuned) >= len(tuned) / 2 else None
