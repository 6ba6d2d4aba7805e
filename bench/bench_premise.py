"""The spread of the chat fixture's premise over training seeds and thread counts.

The factory retrains a chat model whose held-out premise misses `models.PREMISE_BAR`
with another batch order (`train.training_seed`). This prints, per style, thread count
and attempt seed, what a fresh fine-tune of the cached base reaches, so the bar and the
tests' margins rest on a measured spread, not on one run:

    python bench/bench_premise.py [--styles chatml gemma] [--attempts 4] [--threads 1 2]

Figures: templated accuracy, end-of-turn stop rate, raw accuracy on the 200 held-out
questions (25 operand pairs x 8 phrasings: one pair wrong costs 4 points).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", nargs="+", default=["chatml", "gemma"])
    parser.add_argument("--attempts", type=int, default=4)
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from ladder.fixtures import models, train
    from ladder.fixtures.tokenizer import get_style

    base_recipe = train.BaseRecipe()
    weights = models._base_weights_dir(base_recipe, print)
    for style in args.styles:
        chat_recipe = train.ChatRecipe(style=style)
        tokenizer = models.style_tokenizer(style, base_recipe)
        end_of_turn = tokenizer.convert_tokens_to_ids(get_style(style).turn_end)
        for threads in args.threads:
            train.TORCH_THREADS = threads
            accuracies = []
            for attempt in range(args.attempts):
                started = time.perf_counter()
                with models.quiet_transformers():
                    base = AutoModelForCausalLM.from_pretrained(weights)
                model, _ = train.finetune_chat(base, tokenizer, get_style(style), chat_recipe, base_recipe,
                                               attempt=attempt)
                premise = models.measure_premise(model, tokenizer, end_of_turn, base_recipe, chat_recipe)
                accuracies.append(premise["templated_accuracy"])
                print(f"{style:7} threads {threads} seed {train.training_seed(chat_recipe, attempt):6} "
                      f"templated {premise['templated_accuracy']:.0%} stop {premise['stop_rate']:.0%} "
                      f"raw {premise['raw_accuracy']:.0%} holds {models.premise_holds(premise)} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            print(f"{style:7} threads {threads}: templated min {min(accuracies):.0%} "
                  f"median {statistics.median(accuracies):.0%} max {max(accuracies):.0%}", flush=True)


if __name__ == "__main__":
    main()
