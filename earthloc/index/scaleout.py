"""Encode DB chunks on Ray: one task per chunk of images, on a cluster or on a Ray started here.

``earthloc index build --ray ADDRESS`` sends each chunk that is not on disk yet to a Ray task; the
driver writes every finished chunk itself (atomic ``.npy`` in the index's ``.partial-*`` folder, as the
serial build does), so a killed run resumes with the chunks already done. The model travels once,
through Ray's object store. Workers read the images from the paths given: on a multi-node cluster the
DB folder must be on a file system that every node sees (NFS, a mounted bucket) at the same path.

``ADDRESS``: ``local`` starts Ray on this machine for the run (all its CPUs); ``auto`` joins the cluster
that ``ray start`` or ``RAY_ADDRESS`` points at; anything else is passed to ``ray.init`` (``host:6379``,
``ray://host:10001``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from earthloc.errors import InputError


def _encode_chunk(model, paths: list[Path], rotations: tuple[int, ...], batch_size: int, threads: int,
                  device: str) -> np.ndarray:
    """Runs in a Ray worker: the chunk's descriptors (N, R, D) float32."""
    import torch

    from earthloc.models.encode import encode

    torch.set_num_threads(threads)  # the CPUs Ray reserved for this task, not the whole node
    return encode(model, paths, rotations=rotations, batch_size=batch_size, progress=False, device=device)


def _connect(address: str) -> bool:
    """Initialise Ray for ``address``; True when this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(**kwargs)
        return True
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise InputError(f"--ray {address}", f"cannot join a Ray cluster there ({err}); start one with "
                                             "`ray start --head`, or use --ray local") from err
    return True


def encode_on_ray(model, chunks: Sequence[tuple[int, list[Path]]], rotations: tuple[int, ...], batch_size: int = 32,
                  address: str = "local", cpus_per_task: int = 1, device: str = "cpu",
                  progress: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(chunk number, descriptors (N, R, D) float32)`` as Ray tasks finish (any order).

    ``cpus_per_task``: CPUs reserved per task (and torch threads in it). ``device``: ``cuda`` also
    reserves one GPU per task. A bad image fails the run with the task's :class:`InputError`.
    """
    try:
        import ray
    except ImportError as err:
        raise InputError("--ray", "Ray is not installed here: pip install 'earthloc[ray]'") from err

    if cpus_per_task < 1:
        raise InputError("--ray-cpus", f"must be >= 1, got {cpus_per_task}")
    started = _connect(address)
    try:
        task = ray.remote(num_cpus=cpus_per_task, num_gpus=0 if device == "cpu" else 1)(_encode_chunk)
        model_ref = ray.put(model)
        pending = {task.remote(model_ref, paths, tuple(rotations), batch_size, cpus_per_task, device): i
                   for i, paths in chunks}
        with tqdm(total=len(pending), unit="chunk", desc="encode on ray", disable=not progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                try:
                    vecs = ray.get(done[0])
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, InputError):
                        raise err.cause from None  # a bad image: the same one-line error as a local build
                    raise
                bar.update(1)
                yield i, vecs
    finally:
        if started:
            ray.shutdown()
