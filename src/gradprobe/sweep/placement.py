"""Where a run's jobs run: how many at once, how many torch threads each, which GPU each;
torch-free, so it can be decided while the config is still being resolved.

``threads: auto`` resolves to a concrete count before the run is recorded, so the record says
what the run trained with and every re-run (``resume``, ``sweep.resume``, a job alone) can use it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gradprobe import console

# threads=auto never uses more than this: the default experiment (an 8 x 256 MLP, batch 128)
# trained 10 epochs in a median 3.9 s on 1 thread against 55 s on 2 threads of a 2-core machine
# with other work on it (docs/speed.md, "Threads"). Its matrices are too small for a second
# thread to pay for its synchronisation, which sharing the cores turns into a 10x slowdown.
AUTO_THREADS_CAP = 1


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's share),
    not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def auto_threads(cpus: int, share: int | None = None, cap: int = AUTO_THREADS_CAP) -> int:
    """``threads=auto``: the measured cap, never more than the usable cores nor than the share a
    parallel launcher gives each job."""
    return max(1, min(cap, cpus, share or cpus))


def resolve_threads(requested: Any, share: int | None = None, recorded: int | None = None,
                    cpus: int | None = None) -> int:
    """The torch thread count a run trains with: an explicit integer as given; else the count
    a previous attempt of this job recorded (``sweep.resume``); else :func:`auto_threads`."""
    if isinstance(requested, int) and not isinstance(requested, bool):
        return requested
    if recorded:
        return int(recorded)
    return auto_threads(cpus or usable_cpus(), share)


def oversubscribed(threads: int, load: float, cpus: int) -> str | None:
    """One warning line when this run's threads and the work already on the machine (its
    1-minute load average) exceed the usable cores, else ``None``: torch's threads then wait on
    each other at every operation and a run can take ten times longer. One thread only gets
    its fair share of a busy machine, which no setting of this run changes: no warning."""
    if threads <= 1 or load + threads <= cpus:
        return None
    free = max(1, int(cpus - load))
    return (f"warning: threads={threads} on a busy machine (load average {load:.1f} on {cpus} "
            "usable cores): torch threads that share cores can make training ten times "
            f"slower; threads={free} avoids it")


def warn_if_oversubscribed(threads: int) -> None:
    """Print :func:`oversubscribed`'s line, with this machine's numbers, once per process: at
    the first job only (a sweep's later jobs would count the earlier ones in the load). On
    stderr, not the log: the run may still be refused, and a refusal writes no ``train.log``."""
    global _warned
    if _warned:
        return
    _warned = True
    try:
        load = os.getloadavg()[0]
    except OSError:  # the load is unknown here
        return
    line = oversubscribed(threads, load, usable_cpus())
    if line:
        console.echo(line, sys.stderr)  # tagged with the job number in a sweep


_warned = False


def threads_per_job(launcher: Any, cpus: int | None = None) -> int | None:
    """Torch threads for one job so parallel jobs do not oversubscribe the cores: the cores
    divided among joblib's ``n_jobs`` (negative counts back from all cores, as joblib does), or
    submitit's ``cpus_per_task``; ``None`` (torch's default) for sequential launchers."""
    cpus = cpus or usable_cpus()
    n_jobs = launcher.get("n_jobs") if launcher is not None else None
    if n_jobs:
        parallel = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)
        return max(1, cpus // min(parallel, cpus))
    return launcher.get("cpus_per_task") if launcher is not None else None


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch: ``CUDA_VISIBLE_DEVICES`` if
    set, else the driver's list in ``/proc``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def parallel_jobs(accelerator: str, jobs_per_gpu: int = 4, cpus: int | None = None) -> int:
    """How many sweep jobs to run at once on this machine: ``jobs_per_gpu`` per GPU when
    training on GPUs (a small model leaves most of a GPU idle), else one per core."""
    cpus = cpus or usable_cpus()
    gpus = visible_gpus() if accelerator in ("gpu", "cuda", "auto") else 0
    return min(cpus, gpus * jobs_per_gpu) if gpus else cpus


def gpu_for_job(job_number: int, gpus: int) -> list[int]:
    """Round-robin: job k of a sweep trains on GPU k mod N (several jobs share a GPU when there
    are more parallel jobs than GPUs; small models leave most of a GPU idle anyway)."""
    return [job_number % gpus]


def place_job(cfg: DictConfig, job: dict[str, Any]) -> int:
    """A job's share of the machine: its torch threads (:func:`resolve_threads` of ``threads``,
    the launcher's ``share`` and a previous attempt's ``recorded`` count, written back into
    ``cfg.threads`` so the run records the number), and its GPU among several. Returns the
    threads. Torch is imported here, at a job's start: the rest of this module is read by the
    torch-free CLI."""
    threads = resolve_threads(cfg.get("threads"), job.get("share"), job.get("recorded"))
    if job.get("number") in (None, 0):
        warn_if_oversubscribed(threads)
    import torch

    cfg.threads = threads
    torch.set_num_threads(threads)
    gpus = torch.cuda.device_count()
    spread = job.get("number") is not None and cfg.get("sweep", {}).get("spread_gpus")
    if spread and cfg.trainer.accelerator in ("gpu", "cuda") and gpus > 1:
        cfg.trainer.devices = gpu_for_job(job["number"], gpus)
    return threads
