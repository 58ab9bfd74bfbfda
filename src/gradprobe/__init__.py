"""gradprobe: reproducible experiments on gradient flow in deep networks.

Kept import-light on purpose: ``import gradprobe`` must not pull in torch, so that the command
line can validate a config in well under a second. ``gradprobe.GradientFlow`` is loaded on use.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("GradientFlow", "find_layers"):
        from gradprobe import instruments

        return getattr(instruments, name)
    raise AttributeError(f"module 'gradprobe' has no attribute {name!r}")
