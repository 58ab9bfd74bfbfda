"""The training engine: how optimizer steps are driven, sealed behind one small surface.

* :mod:`~gradprobe.engine.plan` -- ``engine.steps_per_call``: how many optimizer steps one
  Lightning call trains, and what loader and Trainer need for it;
* :mod:`~gradprobe.engine.chunks` -- the loader's batch sampler that hands out such chunks;
* :mod:`~gradprobe.engine.chunked` -- the module's chunked training step;
* :mod:`~gradprobe.engine.graph` -- ``engine.compile=graph``: unsampled steps as a CUDA graph;
* :mod:`~gradprobe.engine.lightning_internals` -- the only private Lightning calls.

Instruments never import the engine: they declare what they need (``wants_step``; a loader's
``steps_per_epoch``) in :mod:`gradprobe.instruments.schedule`, and the engine honours it.
"""

from gradprobe.engine.chunked import ChunkedSteps
from gradprobe.engine.chunks import StepChunks
from gradprobe.engine.graph import capturable_kwargs, graph_unavailable
from gradprobe.engine.plan import Plan, plan, steps_per_call

__all__ = ["ChunkedSteps", "Plan", "StepChunks", "capturable_kwargs", "graph_unavailable",
           "plan", "steps_per_call"]
