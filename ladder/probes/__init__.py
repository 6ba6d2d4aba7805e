"""Built-in probes, one module per rung of the default ladder.

Every module's docstring has the sections What it checks / Why it matters /
Symptom / Fix; `ladder explain` shows them. Probe modules import torch and
transformers inside `run`, never at import time, so `ladder validate` stays light.
"""
