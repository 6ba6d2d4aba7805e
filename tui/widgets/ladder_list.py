"""The ladder on the left: rungs in walk order, grouped by tier, each with its state glyph."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from ladder.loader import Ladder
from ladder.models import Status

from .status import RUNNING, glyph

TIER_PREFIX = "tier:"


class LadderList(OptionList):
    """One option per rung (its id is the rung id); tier headers are disabled options.

    A tier can appear twice when an `after` edge pulls a rung of a later tier up:
    the list shows the walk order as it is, not as tiers would suggest.
    """

    BINDINGS = [
        Binding("enter", "select", "run"),  # OptionSelected: the screen runs the rung
        Binding("k", "cursor_up", "Up", show=False),
        Binding("j", "cursor_down", "Down", show=False),
    ]

    def __init__(self, ladder: Ladder, **kwargs) -> None:
        self.ladder = ladder
        self.positions = {rung_id: i for i, rung_id in enumerate(ladder.order, start=1)}
        self.states: dict[str, Status | str] = {rung_id: Status.NOT_RUN for rung_id in ladder.order}
        self.frame = 0
        self.walking = False  # set by the screen while a rung runs: enter is not offered then
        super().__init__(*self._options(), **kwargs)

    def _options(self) -> list[Option]:
        options, tier = [], None
        for rung in self.ladder.ordered():
            if rung.tier != tier:
                tier = rung.tier
                options.append(Option(Text(tier.value.upper(), style="bold"),
                                       id=f"{TIER_PREFIX}{len(options)}", disabled=True))
            options.append(Option(self._prompt(rung.id), id=rung.id))
        return options

    def _prompt(self, rung_id: str) -> Text:
        state = self.states[rung_id]
        dim = state in (Status.NOT_RUN, Status.BLOCKED, Status.SKIP)
        return Text.assemble(glyph(state, self.frame), f" {self.positions[rung_id]:>2} ",
                             (rung_id, "grey62" if dim else ""))

    async def _on_click(self, event: events.Click) -> None:
        """A click selects a rung; a double click runs it (as enter does). Running a probe
        is never a side effect of looking at a rung."""
        event.prevent_default()  # OptionList's own handler would select (run) on every click
        clicked = event.style.meta.get("option")
        if clicked is not None and not self.options[clicked].disabled:
            self.highlighted = clicked
            if event.chain >= 2:
                self.action_select()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "select" and self.walking)

    def set_state(self, rung_id: str, state: Status | str) -> None:
        if self.states.get(rung_id) != state:
            self.states[rung_id] = state
            self.replace_option_prompt(rung_id, self._prompt(rung_id))

    def tick(self) -> None:
        """Advance the spinner of running rungs."""
        self.frame += 1
        for rung_id, state in self.states.items():
            if state == RUNNING:
                self.replace_option_prompt(rung_id, self._prompt(rung_id))

    @property
    def selected_rung(self) -> str | None:
        option = self.highlighted_option
        return option.id if option is not None and option.id in self.positions else None

    def select_rung(self, rung_id: str) -> None:
        self.highlighted = self.get_option_index(rung_id)
