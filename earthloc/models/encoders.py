"""Encode on Ray: DB chunks for ``earthloc index build --ray``, photo batches for ``earthloc locate --ray``.

``earthloc index build --ray ADDRESS`` sends each chunk that is not on disk yet to a Ray task; the
driver writes every finished chunk itself (atomic ``.npy`` in the index's ``.partial-*`` folder, as the
serial build does), so a killed run resumes with the chunks already done. The model travels once,
through Ray's object store. Workers read the images from the paths given: on a multi-node cluster the
DB folder must be on a file system that every node sees (NFS, a mounted bucket) at the same path.

For ``locate --ray`` the workers encode batches of photos (the costly part: ~0.2 s per photo at 4
rotations on 2 cores for the official model) while the driver resolves nadirs, searches the index
(~12 ms per photo) and writes results in input order, so the resumable progress file works as before.

``ADDRESS``: ``local`` starts Ray on this machine for the run (all its CPUs); ``auto`` joins the cluster
that ``ray start`` or ``RAY_ADDRESS`` points at; anything else is passed to ``ray.init`` (``host:6379``,
``ray://host:10001``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def _encode_photos(model, paths: list[Path], rotations: tuple[int, ...], threads: int,
                   device: str) -> list[np.ndarray | str]:
    """Runs in a Ray worker: per photo, its descriptors (R, D) or the error that stopped it."""
    import torch

    from earthloc.locate import _ERRORS
    from earthloc.models.encode import encode
    from earthloc.models.preprocess import load_image

    torch.set_num_threads(threads)
    out: list[np.ndarray | str | None] = []
    images = []
    for p in paths:
        try:
            images.append(load_image(p))
            out.append(None)
        except _ERRORS as err:  # the per-photo failures a serial batch records too
            out.append(str(err))
    desc = iter(encode(model, images, rotations=rotations, batch_size=max(1, len(images)) * len(rotations),
                       progress=False, device=device)) if images else iter(())
    return [next(desc) if o is None else o for o in out]


@contextmanager
def _ray_session(address: str, cpus_per_task: int):
    """Ray, initialised for ``address`` (``local``, ``auto`` or a cluster address); shut down afterwards
    only if this call started it (a caller's own ``ray.init`` is joined and left running)."""
    if cpus_per_task < 1:
        raise InputError("--ray-cpus", f"must be >= 1, got {cpus_per_task}")
    try:
        import ray
    except ImportError as err:
        raise InputError("--ray", "Ray is not installed here: pip install 'earthloc[ray]'") from err
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            ray.init(**kwargs) if address == "local" else ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise InputError(f"--ray {address}", f"cannot join a Ray cluster there ({err}); start one with "
                                                 "`ray start --head`, or use --ray local") from err
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def encode_on_ray(model, chunks: Sequence[tuple[int, list[Path]]], rotations: tuple[int, ...], batch_size: int = 32,
                  address: str = "local", cpus_per_task: int = 1, device: str = "cpu",
                  progress: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(chunk number, descriptors (N, R, D) float32)`` as Ray tasks finish (any order).

    ``cpus_per_task``: CPUs reserved per task (and torch threads in it). ``device``: ``cuda`` also
    reserves one GPU per task. A bad image fails the run with the task's :class:`InputError`.
    """
    with _ray_session(address, cpus_per_task) as ray:
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


def encode_photos_on_ray(model, batches: Sequence[list[Path]], rotations: tuple[int, ...], address: str = "local",
                         cpus_per_task: int = 1, device: str = "cpu") -> Iterator[np.ndarray | str]:
    """Per photo of ``batches`` (flattened, in order): descriptors (R, D) float32, or the error string of a
    photo that could not be read. Tasks run ahead of the consumer by twice the cluster's task slots."""
    with _ray_session(address, cpus_per_task) as ray:
        task = ray.remote(num_cpus=cpus_per_task, num_gpus=0 if device == "cpu" else 1)(_encode_photos)
        model_ref = ray.put(model)
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
        pending: list = []
        todo = iter(batches)
        while True:
            while len(pending) < window and (paths := next(todo, None)) is not None:
                pending.append(task.remote(model_ref, paths, tuple(rotations), cpus_per_task, device))
            if not pending:
                break
            yield from ray.get(pending.pop(0))  # in order: results are written as photos come
