"""gradprobe: reproducible experiments on gradient flow in deep networks.

Kept import-light on purpose: ``import gradprobe`` must not pull in torch, so that the command
line can validate a config in well under a second.
"""

__version__ = "0.1.0"
