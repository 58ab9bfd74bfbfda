"""Gradient-flow instruments: plain Lightning callbacks that work on any LightningModule."""

from gradprobe.instruments.gradient_flow import GradientFlow
from gradprobe.instruments.guard import Guard
from gradprobe.instruments.layers import find_layers

__all__ = ["GradientFlow", "Guard", "find_layers"]
