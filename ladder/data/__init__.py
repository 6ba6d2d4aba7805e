"""Reading what a training run was given: data rows in every common format, training
configs, run folders and batch dumps. Shared by the data and config rungs.

Nothing here imports torch or transformers; big files are streamed with bounded memory.
"""
