"""Sweep-level bookkeeping, torch-free: Hydra instantiates the callback when any command starts.

``SweepSummary`` runs when a multirun ends: it reads each job's ``summary.json``, prints one
line of counts and writes the sweep report (``sweep.report=false`` skips it). Divergence is a
result, not an error; if any job failed (raised, or was killed and so still says ``running``, or
never wrote a record), it says how many of how many and where their logs are, and the command
exits 1 -- after every other job has run.

Modules: ``callback`` (SweepSummary), ``jobs`` (job dirs, statuses, stopping, the summary
line), ``resume`` (``sweep.resume``), ``placement`` (threads, GPUs, parallel jobs) and
``publish`` (the sweep report, and its W&B copy); import from them.
"""
