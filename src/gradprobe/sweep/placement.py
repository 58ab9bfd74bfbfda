"""Where a sweep's jobs run: how many at once, how many torch threads each, which GPU each;
torch-free, so it can be decided while the config is still being resolved."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def threads_per_job(launcher: Any, cpus: int | None = None) -> int | None:
    """Torch threads for one job so parallel jobs do not oversubscribe the cores: the cores
    divided among joblib's ``n_jobs`` (negative counts back from all cores, as joblib does), or
    submitit's ``cpus_per_task``; ``None`` (torch's default) for sequential launchers."""
    cpus = cpus or os.cpu_count() or 1
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
    cpus = cpus or os.cpu_count() or 1
    gpus = visible_gpus() if accelerator in ("gpu", "cuda", "auto") else 0
    return min(cpus, gpus * jobs_per_gpu) if gpus else cpus


def gpu_for_job(job_number: int, gpus: int) -> list[int]:
    """Round-robin: job k of a sweep trains on GPU k mod N (several jobs share a GPU when there
    are more parallel jobs than GPUs; small models leave most of a GPU idle anyway)."""
    return [job_number % gpus]


def place_job(cfg: DictConfig, job: dict[str, Any]) -> None:
    """A sweep job's share of the machine: its torch threads, and its GPU among several (torch
    is imported here, at a job's start: the rest of this module is read by the torch-free CLI)."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    gpus = torch.cuda.device_count()
    spread = job.get("number") is not None and cfg.get("sweep", {}).get("spread_gpus")
    if spread and cfg.trainer.accelerator in ("gpu", "cuda") and gpus > 1:
        cfg.trainer.devices = gpu_for_job(job["number"], gpus)
