"""Screens of the TUI: the walk, help, confirmations, the skip reason, bad input."""
