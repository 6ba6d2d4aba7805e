"""`file.py:NAME` or `module:NAME` references to the user's Python objects (collators, config schemas)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


class LoadError(Exception):
    """The reference cannot be loaded; the message says why (import error, missing name)."""


def load_object(reference: str) -> Any:
    target, sep, name = reference.rpartition(":")
    if not sep or not target or not name:
        raise LoadError(f"{reference!r} must be FILE.py:NAME or module:NAME")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise LoadError(f"{path} does not exist")
            module_name = f"ladder_user_{path.stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                folder = str(path.resolve().parent)
                sys.path.insert(0, folder)  # as when the file runs as a script: its siblings import
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(module_name, None)
                    raise
                finally:
                    if folder in sys.path:
                        sys.path.remove(folder)
        else:
            module = importlib.import_module(target)
    except LoadError:
        raise
    except Exception as exc:  # the user's module failed to import: say what it raised
        raise LoadError(f"importing {target} raised {type(exc).__name__}: {exc}") from None
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))[:12]
            raise LoadError(f"{target} has no {name!r} (it has: {', '.join(public)})")
        obj = getattr(obj, part)
    return obj
