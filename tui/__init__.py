"""The Textual app (`ladder tui`): installed as `ladder.tui`."""
