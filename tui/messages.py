"""Messages of the TUI: the runner's events, carried from worker threads to the screen."""

from __future__ import annotations

from textual.message import Message

from ladder.events import Event


class RunnerEvent(Message):
    """An event of `ladder.runner.Runner` (RungStarted, RungProgress, RungFinished, ...).

    The runner emits from worker and probe threads; `post_message` is thread-safe and
    never blocks a probe, so the UI thread handles every event in the order emitted.
    """

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class WalkDone(Message):
    """A walk (one rung, or `a`'s run of all remaining rungs) ended: the UI is free again."""

    def __init__(self, cancelled: bool, crashed: str | None = None) -> None:
        super().__init__()
        self.cancelled = cancelled
        self.crashed = crashed
