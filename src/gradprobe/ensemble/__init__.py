"""Vectorized sweeps: same-shape jobs of a multirun trained as one ensemble, by Lightning.

Jobs that differ only in what sets their initial weights, data order and step size (``seed``,
the ``init`` group, ``optimizer.lr``) have networks of identical shapes. They train as one
LightningModule (:mod:`~gradprobe.ensemble.module`: stacked parameters, one ``vmap``-ed forward,
one optimizer) fitted and tested by one ``pl.Trainer`` configured as a solo run's, so epochs,
``max_steps``, limits, validation cadence, the scheduler and checkpoints are Lightning's, as
alone. Each member starts from the weights it would draw alone, sees the batches it would see
alone (:mod:`~gradprobe.ensemble.data`) and gets its own gradients, so its numbers equal a solo
run's up to float rounding. Its instruments and divergence guard run in a callback
(:mod:`~gradprobe.ensemble.callback`); its logs and checkpoints are split out of the Trainer's
(:mod:`~gradprobe.ensemble.records`); its run directory, ``summary.json``, gradflow records and W&B
run are its own (:mod:`~gradprobe.ensemble.members`).
"""

from gradprobe.ensemble.members import Member, train
from gradprobe.ensemble.module import EnsembleModule

__all__ = ["EnsembleModule", "Member", "train"]
