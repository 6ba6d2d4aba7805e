"""The probe registry: probes by name, loaded lazily from the entry-point group `ladder.probes`.

Built-in probes are registered through the same group as third-party ones
(harlequin and pytest do the same), so there is one registration path. Entries
are `module:Class` strings; a module is imported only when its probe is first
needed, which keeps `ladder --help` and `ladder rules` free of torch. A plugin
that fails to load is reported and left out; it never stops ladder.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from ladder.probes.base import Probe

GROUP = "ladder.probes"
OWN_DISTRIBUTION = "ladder-debug"
AUTOLOAD_SWITCH = "LADDER_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class Entry:
    name: str
    target: str  # module:Class
    distribution: str

    @property
    def builtin(self) -> bool:
        return self.distribution == OWN_DISTRIBUTION


class UnknownProbe(LookupError):
    def __init__(self, name: str, available: list[str]):
        self.name = name
        self.available = available
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown probe {name!r}{hint}; available: {', '.join(available) or 'none'}")


class BrokenProbe(RuntimeError):
    pass


class ProbeRegistry:
    """Probe classes by name; `get` imports on first use and checks the class."""

    def __init__(self, disabled: tuple[str, ...] = (), autoload: bool | None = None):
        if autoload is None:
            autoload = os.environ.get(AUTOLOAD_SWITCH, "") in ("", "0")
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, type[Probe]] = {}
        self.problems: list[str] = []  # plugins refused or broken, for the user to see
        self._disabled = set(disabled)
        self._autoload = autoload
        self._discover()

    def _discover(self) -> None:
        found = sorted(entry_points(group=GROUP), key=lambda ep: (ep.dist.name != OWN_DISTRIBUTION
                                                                  if ep.dist else True, ep.name))
        for ep in found:
            dist = ep.dist.name if ep.dist else "?"
            entry = Entry(ep.name, ep.value, dist)
            if not entry.builtin and (not self._autoload or dist in self._disabled
                                      or ep.name in self._disabled):
                continue
            if ep.name in self._entries:
                other = self._entries[ep.name]
                if other.target != entry.target:
                    self.problems.append(f"probe {ep.name!r} from {dist} refused: "
                                         f"{other.distribution} already registers it")
                continue
            self._entries[ep.name] = entry

    def register(self, name: str, probe: type[Probe] | str, distribution: str = "<runtime>") -> None:
        """Add a probe at run time (tests, notebooks). Names already taken are refused."""
        if name in self._entries or name in self._loaded:
            raise ValueError(f"probe {name!r} is already registered")
        if isinstance(probe, str):
            self._entries[name] = Entry(name, probe, distribution)
        else:
            self._check(name, probe)
            self._entries[name] = Entry(name, f"{probe.__module__}:{probe.__qualname__}", distribution)
            self._loaded[name] = probe

    def names(self) -> list[str]:
        return sorted(self._entries)

    def origin(self, name: str) -> str:
        entry = self._entries[name]
        return f"{entry.target} ({entry.distribution})"

    def get(self, name: str) -> type[Probe]:
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownProbe(name, self.names())
        module_name, _, attr = entry.target.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # a broken plugin must not kill ladder
            message = f"probe {name!r} from {entry.distribution} failed to load: {type(exc).__name__}: {exc}"
            self.problems.append(message)
            raise BrokenProbe(message) from exc
        self._check(name, obj)
        self._loaded[name] = obj
        return obj

    @staticmethod
    def _check(name: str, obj: object) -> None:
        if not (isinstance(obj, type) and issubclass(obj, Probe)):
            raise BrokenProbe(f"probe {name!r} is {obj!r}, not a subclass of ladder.probes.base.Probe")
