"""The encoding seam: images -> descriptors (B, R, D), here or on Ray workers.

Everything that encodes (the index build, the locator, the benchmarks) is handed an :class:`Encoder`
instead of device / Ray / batch-size scalars:

- :class:`LocalEncoder`: in this process (``cpu``, ``cuda[:N]`` or ``auto``), through
  :func:`earthloc.models.encode.encode`.
- :class:`RayEncoder`: batches go to Ray tasks. The model travels once, through Ray's object store;
  results come back in order, with up to ``2 x task slots`` batches in flight. ``earthloc index build
  --ray`` sends each missing chunk of DB images (read there by path: on a multi-node cluster the DB
  folder must be on a file system every node sees at the same path); ``earthloc locate --ray`` sends
  the photos the driver has already decoded (each photo is read once, by the guarded loader).

Ray ``address``: ``local`` starts Ray on this machine for the run (all its CPUs); ``auto`` joins the
cluster that ``ray start`` or ``RAY_ADDRESS`` points at; anything else is passed to ``ray.init``
(``host:6379``, ``ray://host:10001``). A caller's own ``ray.init`` is joined and left running.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import earthloc.models.encode as batch_encode  # called through the module: tests check who encodes
from earthloc.errors import InputError
from earthloc.models.fast import resolve_device

Item = str | os.PathLike | Image.Image


class Encoder(Protocol):
    """Turns images into L2-normalised descriptors; ``model`` is what the index's identity is taken from."""

    model: torch.nn.Module
    batch_size: int

    def encode(self, items: Sequence[Item], rotations: Sequence[int]) -> np.ndarray:
        """Descriptors (B, R, D) float32 of ``items`` (paths or PIL images) at each of ``rotations``."""
        ...

    def encode_batches(self, batches: Iterable[Sequence[Item]], rotations: Sequence[int],
                       progress: bool = False) -> Iterator[np.ndarray]:
        """Per batch, in order: its descriptors (len(batch), R, D). ``batches`` is consumed lazily."""
        ...


@dataclass
class LocalEncoder:
    """Encodes in this process on ``device`` (``cpu``, ``cuda[:N]``, ``auto``), ``batch_size`` images
    x rotations per forward pass."""

    model: torch.nn.Module
    device: str = "cpu"
    batch_size: int = 8

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)  # a missing GPU is bad input, before any work

    def encode(self, items: Sequence[Item], rotations: Sequence[int], progress: bool = False) -> np.ndarray:
        """Descriptors (len(items), len(rotations), D) float32 of images (paths or PIL) at each rotation
        (degrees counter-clockwise)."""
        return batch_encode.encode(self.model, list(items), rotations=tuple(rotations), batch_size=self.batch_size,
                                   progress=progress, device=self.device)

    def encode_batches(self, batches: Iterable[Sequence[Item]], rotations: Sequence[int],
                       progress: bool = False) -> Iterator[np.ndarray]:
        """Descriptors per batch, (len(batch), len(rotations), D) float32 each, in batch order."""
        for batch in batches:
            yield self.encode(batch, rotations, progress)


def _encode_on_worker(model: torch.nn.Module, items: list, rotations: tuple[int, ...], batch_size: int,
                      threads: int, device: str) -> np.ndarray:
    """Runs in a Ray worker: descriptors (N, R, D) float32 of one batch."""
    torch.set_num_threads(threads)  # the CPUs Ray reserved for this task, not the whole node
    return batch_encode.encode(model, items, rotations=rotations, batch_size=batch_size, progress=False,
                               device=device)


@contextmanager
def ray_session(address: str, cpus_per_task: int):
    """Ray, initialised for ``address`` (``local``, ``auto`` or a cluster address); shut down afterwards
    only if this call started it (a caller's own ``ray.init`` is joined and left running)."""
    if cpus_per_task < 1:
        raise InputError("cpus", f"must be >= 1, got {cpus_per_task}")
    try:
        import ray  # noqa: PLC0415  heavy optional backend: only when asked for
    except ImportError as err:
        raise InputError("address", "Ray is not installed here: pip install 'earthloc[ray]'") from err
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            # "local" always starts a fresh instance: a plain ray.init() would join whatever cluster
            # /tmp/ray/ray_current_cluster names (another user's, or a dead one, on a shared machine)
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise InputError(f"address {address}", f"cannot join a Ray cluster there ({err}); start one with "
                                                 "`ray start --head`, or use address \"local\"") from err
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@dataclass
class RayEncoder:
    """Encodes on Ray workers at ``address``: ``cpus`` CPUs (torch threads) per task; ``device``
    ``cuda`` also reserves one GPU per task. ``batch_size``: images x rotations per forward pass
    inside a task."""

    model: torch.nn.Module
    address: str = "local"
    cpus: int = 1
    device: str = "cpu"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise InputError("cpus", f"must be >= 1, got {self.cpus}")
        self.device = resolve_device(self.device)

    def encode(self, items: Sequence[Item], rotations: Sequence[int]) -> np.ndarray:
        """Descriptors (len(items), len(rotations), D) float32, encoded batch by batch on the Ray workers."""
        items = list(items)
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        out = list(self.encode_batches(batches, rotations))
        dim = int(getattr(self.model, "descriptor_dim"))
        return np.concatenate(out) if out else np.empty((0, len(tuple(rotations)), dim), np.float32)

    def encode_batches(self, batches: Iterable[Sequence[Item]], rotations: Sequence[int],
                       progress: bool = False) -> Iterator[np.ndarray]:
        """In order; a bad image fails with the worker's :class:`InputError` (the same one-line error as
        a local run)."""
        rotations = tuple(int(r) for r in rotations)
        with ray_session(self.address, self.cpus) as ray:
            task = ray.remote(num_cpus=self.cpus, num_gpus=0 if self.device == "cpu" else 1)(_encode_on_worker)
            model_ref = ray.put(self.model)
            window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1) // self.cpus))
            pending: list = []
            todo = iter(batches)
            with tqdm(unit="batch", desc="encode on ray", disable=not progress) as bar:
                while True:
                    while len(pending) < window and (items := next(todo, None)) is not None:
                        pending.append(task.remote(model_ref, list(items), rotations, self.batch_size, self.cpus,
                                                   self.device))
                    if not pending:
                        break
                    try:
                        vecs = ray.get(pending.pop(0))
                    except ray.exceptions.RayTaskError as err:
                        if isinstance(err.cause, InputError):
                            raise err.cause from None
                        raise
                    bar.update(1)
                    yield vecs


def as_encoder(encoder_or_model: Encoder | torch.nn.Module, batch_size: int = 8) -> Encoder:
    """An :class:`Encoder` as is; a bare model as a :class:`LocalEncoder` on the CPU with ``batch_size``."""
    if isinstance(encoder_or_model, torch.nn.Module):
        return LocalEncoder(encoder_or_model, batch_size=batch_size)
    return encoder_or_model
