"""Backends: how the model is reached. `hf` (transformers in-process) and, later, `openai` (HTTP).

A backend declares its capabilities; a probe needing one the backend lacks skips with the reason.
"""
