"""Widgets of the TUI: the ladder list, the rung detail, and the evidence views."""
