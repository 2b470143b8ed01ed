"""Build an EarthLoc DB on Ray: ``earthloc db build --ray local|auto|ADDRESS``.

The driver plans and resumes exactly as a local build (:func:`earthloc.db.build.start_build`), sends
the images still to do to Ray tasks in batches of neighbouring places, and writes every finished image
itself (atomic write, journal line, then ``manifest.parquet`` at the end), so names, bytes, resume and
manifest are those of a local build and no image is ever written twice. Workers only compose and encode
(:func:`earthloc.db.build.make_image`), and return the JPEG bytes.

- **Any source**: workers open their own source from a *recipe*, a picklable callable
  ``recipe(limits=None) -> TileSource`` (the CLI passes ``functools.partial(open_source, spec, ...)``,
  so every ``--source`` kind works, sources added later included).
- **One limit for the cluster**: a single :class:`HostGate` actor, pinned to the driver's node, holds
  each host's request rate and requests in flight; every worker's WMTS source asks it before each
  request (:class:`RayHostLimits`). The slots of a node that dies are freed once Ray marks it dead.
- **One tile cache**: the recipe's ``cache_dir`` (absolute). Workers on one machine share it; on several
  machines it must be a file system they all see at the same path (else each node keeps its own).
- **A worker dies**: its batch is run again on another worker (up to ``max_resubmits`` times, after 1, 2,
  4... s, so that Ray has noticed a dead node before placing the batch again); the
  tiles it fetched are in the cache, the images it made were never written, so nothing is lost or
  written twice.

``ADDRESS``: ``local`` starts Ray here for the run; ``auto`` joins the cluster of ``ray start`` /
``RAY_ADDRESS``; else ``host:port`` or ``ray://host:10001`` (see :func:`earthloc.models.encoders.ray_session`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from earthloc.config import cache_dir
from earthloc.db.build import JPEG_QUALITY, BuildReport, make_image, missing_image, save_image, start_build
from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.sources.base import ImageSkipped, TileMissing, TileSource

RESUBMIT_DELAY_S = 1.0  # first wait before a dead worker's batch runs again; doubles per attempt


@dataclass(frozen=True)
class RayBuildReport(BuildReport):
    """A :class:`BuildReport` plus what the cluster did: HTTP requests through the shared gate, the most
    requests it ever let be in flight at once (per host), and the Ray nodes alive at the start."""

    requests: int = 0
    peak_in_flight: int = 0
    nodes: int = 0


class HostGate:
    """The cluster's one per-host limit (a Ray actor; plain Python here so it can be reasoned about alone).

    ``acquire(host, node)`` waits for a free slot (at most ``concurrency`` leases per host), books the
    next start time allowed by ``rate`` (starts/s per host, None = unlimited) and returns ``(lease,
    delay_s)``: the caller sleeps ``delay_s``, makes its request, then ``release(lease)``. Delays, not
    clock times, cross the wire, so nodes need no synchronised clocks. ``claim(url, node)`` /
    ``unclaim(url)`` make one worker at a time fetch a tile (the others then find it in the shared cache).
    Leases and claims of a node that ``alive_nodes()`` no longer lists are dropped at once (checked at most
    once a second, while someone waits); any not released within ``lease_s`` (a worker process that died
    on a live node) are dropped then.
    """

    def __init__(self, rate: float | None, concurrency: int, lease_s: float = 120.0,
                 alive_nodes: Callable[[], set[str]] | None = None):
        self._interval = 1.0 / rate if rate else 0.0
        self._concurrency = max(1, concurrency)
        self._lease_s = lease_s
        self._alive_nodes = alive_nodes
        self._swept = 0.0
        self._next: dict[str, float] = {}
        self._leases: dict[int, tuple[str, float, str]] = {}  # lease -> (host, expiry, node)
        self._ids = itertools.count()
        self._claims: dict[str, tuple[float, str]] = {}  # url -> (expiry, node)
        self.requests = 0
        self.peak_in_flight = 0

    def _sweep(self) -> None:
        """Drop expired leases and claims, and (once a second) those of dead nodes."""
        now = time.monotonic()
        dead: set[str] = set()
        if self._alive_nodes is not None and now - self._swept >= 1.0:
            self._swept = now
            held = {n for _, _, n in self._leases.values()} | {n for _, n in self._claims.values()}
            dead = held - self._alive_nodes()
        for lease, (_, expiry, node) in list(self._leases.items()):
            if expiry < now or node in dead:
                del self._leases[lease]
        for url, (expiry, node) in list(self._claims.items()):
            if expiry < now or node in dead:
                del self._claims[url]

    def _in_flight(self, host: str) -> int:
        return sum(h == host for h, _, _ in self._leases.values())

    async def acquire(self, host: str, node: str = "") -> tuple[int, float]:
        """Book a request slot for ``host``: returns (lease id, seconds to wait before sending)."""
        # one event loop, no await between the check and the booking: no lock needed
        while self._in_flight(host) >= self._concurrency:
            self._sweep()
            if self._in_flight(host) < self._concurrency:
                break
            await asyncio.sleep(0.005)
        now = time.monotonic()
        start = max(now, self._next.get(host, 0.0))
        self._next[host] = start + self._interval
        lease = next(self._ids)
        self._leases[lease] = (host, start + self._lease_s, node)
        self.requests += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight(host))
        return lease, start - now

    async def release(self, lease: int) -> None:
        """Free the request slot of ``lease``."""
        self._leases.pop(lease, None)

    async def pause(self, host: str, seconds: float) -> None:
        """No request to ``host`` starts for ``seconds`` (a 429's Retry-After), cluster-wide."""
        self._next[host] = max(self._next.get(host, 0.0), time.monotonic() + seconds)

    async def claim(self, url: str, node: str = "") -> None:
        """Wait until no other worker fetches ``url``, then hold it (single flight, cluster-wide)."""
        while url in self._claims:
            self._sweep()
            if url not in self._claims:
                break
            await asyncio.sleep(0.005)
        self._claims[url] = (time.monotonic() + self._lease_s, node)

    async def unclaim(self, url: str) -> None:
        """Let others fetch ``url`` again."""
        self._claims.pop(url, None)

    async def stats(self) -> dict:
        """Counters for tests and logs: requests booked, peak requests in flight to one host."""
        return {"requests": self.requests, "peak_in_flight": self.peak_in_flight}


def _alive_nodes() -> set[str]:
    """Ids of the cluster's live nodes (called inside the gate actor)."""
    import ray  # noqa: PLC0415  Ray is an optional heavy backend: imported only for a Ray build

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


class RayHostLimits:
    """:class:`earthloc.sources.wmts.HostLimits` backed by a :class:`HostGate` actor (picklable: workers get it)."""

    def __init__(self, gate):
        self.gate = gate

    @staticmethod
    def _node() -> str:
        import ray  # noqa: PLC0415  Ray is an optional heavy backend: imported only for a Ray build

        return ray.get_runtime_context().get_node_id()

    @contextmanager
    def request(self, host: str) -> Iterator[None]:
        """Context manager: one of ``host``'s cluster-wide request slots, entered no earlier than its rate allows."""
        import ray  # noqa: PLC0415  Ray is an optional heavy backend: imported only for a Ray build

        lease, delay = ray.get(self.gate.acquire.remote(host, self._node()))
        try:
            if delay > 0:
                time.sleep(delay)
            yield
        finally:
            self.gate.release.remote(lease)

    def pause(self, host: str, seconds: float) -> None:
        """No request to ``host`` starts for ``seconds`` anywhere in the cluster."""
        self.gate.pause.remote(host, seconds)

    @contextmanager
    def fetching(self, url: str) -> Iterator[None]:
        """Context manager: entered when no other worker of the cluster is fetching ``url``."""
        import ray  # noqa: PLC0415  Ray is an optional heavy backend: imported only for a Ray build

        ray.get(self.gate.claim.remote(url, self._node()))
        try:
            yield
        finally:
            self.gate.unclaim.remote(url)


# --- in the workers ---------------------------------------------------------------------------------
_OPEN: dict[str, TileSource] = {}  # per worker process: the source of the build it works for


def _worker_source(build_id: str, recipe: Callable[..., TileSource], limits: RayHostLimits) -> TileSource:
    """This process's source for ``build_id``: opened once, so its memory LRU and connections last across batches."""
    if build_id not in _OPEN:
        for old in _OPEN.values():
            if hasattr(old, "close"):
                old.close()
        _OPEN.clear()
        _OPEN[build_id] = recipe(limits=limits)
    return _OPEN[build_id]


def _build_batch(build_id: str, recipe: Callable[..., TileSource], limits: RayHostLimits,
                 jobs: list[tuple[int, TileBlock]], quality: int, size: int, threads: int) -> list[tuple[str, bytes | str]]:
    """Runs in a Ray worker: per job, ``("ok", JPEG bytes)``, ``("missing", why)`` (a tile is missing) or
    ``("skipped", why)`` (the source declined the image). Any other error (bad input, a refusing or
    unreachable host) fails the task and so the build.
    """
    source = _worker_source(build_id, recipe, limits)

    def one(job: tuple[int, TileBlock]) -> tuple[str, bytes | str]:
        year, block = job
        try:
            return "ok", make_image(source, block, year, quality, size)
        except TileMissing as err:
            return "missing", str(err)
        except ImageSkipped as skip:
            return "skipped", str(skip)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # tiles of several images in flight
        return list(pool.map(one, jobs))


# --- in the driver ----------------------------------------------------------------------------------
def _years_of(recipe: Callable[..., TileSource]) -> tuple[int, ...]:
    source = recipe()
    try:
        return tuple(source.years)
    finally:
        if hasattr(source, "close"):
            source.close()


def build_db_on_ray(
    recipe: Callable[..., TileSource],
    places: Iterable[TileBlock],
    years: Sequence[int],
    out_dir: str | os.PathLike,
    address: str = "local",
    quality: int = JPEG_QUALITY,
    size: int = 1024,
    rate_per_host: float | None = 16.0,
    concurrency: int = 8,
    batch: int = 8,
    threads: int = 4,
    cpus_per_task: int = 1,
    max_resubmits: int = 5,
    progress: bool = True,
) -> RayBuildReport:
    """Build like :func:`earthloc.db.build.build_db`, with Ray tasks making the images.

    ``recipe(limits=...)`` opens the source in each worker (and once here, for its years).
    ``rate_per_host`` (starts/s) and ``concurrency`` (requests in flight) hold for the whole cluster.
    ``batch`` neighbouring images per task (they share tiles), ``threads`` images at once in a task,
    ``cpus_per_task`` CPUs reserved per task. Places missing a tile are recorded, as locally.
    """
    if batch < 1 or threads < 1:
        raise InputError("batch" if batch < 1 else "threads", "must be >= 1")
    state = start_build(_years_of(recipe), places, years, out_dir, size)
    batches = [state.todo[i:i + batch] for i in range(0, len(state.todo), batch)]
    resubmitted = 0
    bar = tqdm(total=len(state.plan), initial=len(state.plan) - len(state.todo), unit="img", desc="db build on ray",
               disable=not progress)
    from earthloc.models.encoders import ray_session  # noqa: PLC0415  torch: driver only

    try:
        with ray_session(address, cpus_per_task) as ray:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415  Ray

            here = ray.get_runtime_context().get_node_id()  # the gate lives and dies with the driver's node
            gate = ray.remote(HostGate).options(
                num_cpus=0, max_concurrency=10_000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            ).remote(rate_per_host, concurrency, alive_nodes=_alive_nodes)
            limits = RayHostLimits(gate)
            task = ray.remote(num_cpus=cpus_per_task, max_retries=0)(_build_batch)  # retried here, counted
            build_id = uuid.uuid4().hex
            recipe_ref = ray.put(recipe)
            nodes = sum(1 for n in ray.nodes() if n["Alive"])
            window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
            pending: dict = {}  # object ref -> (batch number, attempts so far)
            again: list[tuple[float, int, int]] = []  # (not before, batch number, attempts): batches to run again
            todo = iter(range(len(batches)))

            def submit(i: int, attempts: int) -> None:
                ref = task.remote(build_id, recipe_ref, limits, batches[i], quality, size, threads)
                pending[ref] = (i, attempts)

            while True:
                now = time.monotonic()
                for item in [a for a in again if a[0] <= now]:
                    again.remove(item)
                    submit(*item[1:])
                while len(pending) < window and (i := next(todo, None)) is not None:
                    submit(i, 0)
                if not pending:
                    if not again:
                        break
                    time.sleep(max(0.0, min(a[0] for a in again) - now))
                    continue
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5 if again else None)
                if not done:
                    continue
                i, attempts = pending.pop(done[0])
                try:
                    results = ray.get(done[0])
                except ray.exceptions.RayTaskError as err:  # the task itself raised
                    if isinstance(err.cause, InputError):
                        raise err.cause from None  # the same one-line error as a local build
                    raise
                except ray.exceptions.RayError as err:  # its worker or node died: run the batch again
                    if attempts >= max_resubmits:
                        raise InputError(f"address {address}", f"a batch failed {attempts + 1} times, last: "
                                                             f"{type(err).__name__}") from err
                    # not at once: until the cluster has noticed a dead node, Ray may place the batch there again
                    resubmitted += 1
                    again.append((time.monotonic() + RESUBMIT_DELAY_S * 2**attempts, i, attempts + 1))
                    continue
                for (year, block), (outcome, value) in zip(batches[i], results):
                    if outcome == "ok":
                        state.done(save_image(state.out_dir, block, year, value))
                    elif outcome == "missing":
                        state.missing.append(missing_image(block, year, value))
                    else:
                        state.left_out.append(value)
                    bar.update(1)
            http = ray.get(gate.stats.remote())
    except BaseException:
        state.journal.close()
        raise
    finally:
        bar.close()
    rep = state.finish(resubmitted)
    return RayBuildReport(**{f: getattr(rep, f) for f in rep.__dataclass_fields__},
                          requests=http["requests"], peak_in_flight=http["peak_in_flight"], nodes=nodes)


def default_tile_cache(tile_cache: Path | None) -> Path:
    """The tile cache every worker uses: ``tile_cache`` or the default, as an absolute path (resolved here,
    in the driver, so workers started with another environment still share it)."""
    return Path(tile_cache or cache_dir() / "tiles").expanduser().resolve()
