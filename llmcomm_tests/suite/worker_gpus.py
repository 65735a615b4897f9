"""pytest-xdist on a GPU host: each worker gets its own GPUs.

Every worker would otherwise see every GPU and start its rank r on ``cuda:r``: two 8-rank cases on
two workers then share the same eight GPUs.  Each worker gets a disjoint slice of the visible
devices through ``CUDA_VISIBLE_DEVICES`` (set before anything in the worker asks CUDA), as wide as
``--gpus`` or, without it, an equal share; where the workers do not fit, the session is refused
with one line before any worker starts.
"""

from __future__ import annotations

import os

from llmcomm_tests.core.envinfo import cuda_device_count


def visible_devices() -> list[str]:
    """The device ids this process may use: ``CUDA_VISIBLE_DEVICES`` as given, else 0..count-1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()][:cuda_device_count()]
    return [str(i) for i in range(cuda_device_count())]


def worker_slice(devices: list[str], worker: int, workers: int, gpus: int | None) -> list[str]:
    """The devices of worker ``worker`` of ``workers``; ValueError (one line) where they do not fit."""
    if workers <= 1 or not devices or (gpus is not None and gpus > len(devices)):
        return devices  # one process, no GPU, or CPU ranks on gloo anyway (--gpus beyond the devices)
    width = gpus if gpus is not None else len(devices) // workers
    if width == 0 or width * workers > len(devices):
        per_worker = gpus or 1
        advice = f"run -n {len(devices) // per_worker} or fewer"
        if gpus and len(devices) >= workers:
            advice += f", or --gpus {len(devices) // workers}"
        raise ValueError(f"-n {workers} workers x {per_worker} GPUs each need {workers * per_worker} GPUs, "
                         f"{len(devices)} here (each worker needs its own): {advice}")
    return devices[worker * width:(worker + 1) * width]


def workers_of(config) -> tuple[int, int]:
    """(this worker's index, the number of workers): (0, n) on the controller, (0, 1) without xdist."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        return int(worker["workerid"].lstrip("gw")), int(worker["workercount"])
    n = getattr(config.option, "numprocesses", None)
    return 0, n if isinstance(n, int) and n > 1 else 1


def assign(config, gpus: int | None) -> None:
    """On a worker: restrict it to its slice.  On the controller: refuse a session that cannot be
    sliced.  Without xdist: nothing."""
    worker, workers = workers_of(config)
    if workers <= 1:
        return
    devices = visible_devices()
    mine = worker_slice(devices, worker, workers, gpus)
    if hasattr(config, "workerinput") and mine != devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
