"""Injected by `ladder --harness-cmd` through PYTHONPATH: installs the tap in the harness's Python.

Every record (a model or tokenizer load, a generate call) is appended to the JSONL
file named by LADDER_TAP_OUT as it is made, so a crash loses nothing. A user's own
`sitecustomize`, shadowed by this one, is still run afterwards.
"""

import json
import os
import sys


def _install() -> None:
    out = os.environ.get("LADDER_TAP_OUT")
    if not out:
        return
    root = os.environ.get("LADDER_TAP_ROOT")
    if root and root not in sys.path:
        sys.path.append(root)

    def write(kind, record):
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"type": kind, "record": record}, default=str) + "\n")

    try:
        from ladder.harness.tap import Tap

        tap = Tap(redirect=json.loads(os.environ.get("LADDER_TAP_REDIRECT") or "{}"), on_record=write)
        label = os.environ.get("LADDER_TAP_LABEL")
        tap.mark(int(label) if label and label.isdigit() else label)
        tap.__enter__()  # left installed until the process ends
    except Exception as exc:  # no transformers here: nothing to record, the command still runs
        write("tap-error", {"message": f"{type(exc).__name__}: {exc}"})


def _chain_user_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    module = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import importlib

        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if module is not None:
            sys.modules["sitecustomize"] = module


_install()
_chain_user_sitecustomize()
