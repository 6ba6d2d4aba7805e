"""Model folders the tests derive from the factory's (surgery, a swapped file), cached like the factory's.

`derived_model` is `ladder.fixtures.cache.cached_build` into a folder of its own (`test-variants` next to
the factory's), keyed by the source folders (whose names carry the factory's recipe keys), the parameters
and this test folder's helper source: a changed recipe or helper rebuilds, two test processes build once.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Callable

from ladder.fixtures import cache

HELPER_MODULES = ("derived_models.py", "interface_models.py", "internals_models.py")


def _helpers_version() -> str:
    digest = hashlib.sha256()
    for name in HELPER_MODULES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


def derived_model(kind: str, sources: list[Path], params: dict, build: Callable[[Path], None]) -> Path:
    """The folder `build(folder)` writes for these sources and params, built once and then reused."""
    key_params = {"sources": [Path(s).name for s in sources], **params}
    # not beside the factory's models: an adapter folder next to a checkpoint is what load-report looks for
    root = cache.cache_root().parent / "test-variants"
    return cache.cached_build(kind, key_params, _helpers_version(), build, root=root)


def quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def copy_tokenizer_files(source: Path, dest: Path) -> None:
    """Everything in a model folder but its weights, config and cache bookkeeping."""
    for path in source.iterdir():
        if path.is_file() and path.name not in ("model.safetensors", "config.json", cache.MANIFEST):
            shutil.copy2(path, dest / path.name)
