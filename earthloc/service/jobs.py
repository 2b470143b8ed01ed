"""A bounded job queue for the web app: CPU work in a fixed pool of worker threads, off the event loop.

``submit(work)`` queues ``work(report)`` and returns a :class:`Job` at once; ``report(stage, done,
total)`` updates the job's progress as the work runs (the pipeline's ``on_event``). When
``workers + max_queued`` jobs are waiting or running, :meth:`JobQueue.submit` raises :class:`QueueFull`
with an estimate of when to retry. Worker threads run at a lower CPU priority (``nice``, Linux: per thread;
threads they start, such as torch's, inherit it), so requests for pages and tiles are served first. Finished jobs are kept (the latest ``keep``) so their results can be
fetched; older ones are forgotten.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Report = Callable[[str, int, int], None]


class QueueFull(Exception):
    """The queue is at capacity; ``retry_after_s`` estimates when a slot frees up."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the job queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class Job:
    """One job's state. ``state``: queued, running, done or failed; ``stage`` the step it is in."""

    id: str
    state: str = "queued"
    stage: str = "queued"
    done: int = 0
    total: int = 0
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None


class JobQueue:
    """``workers`` threads run jobs; at most ``max_queued`` more wait; the latest ``keep`` are remembered.
    ``nice``: how much lower the workers' CPU priority is than the server's (0: the same)."""

    def __init__(self, workers: int = 1, max_queued: int = 8, keep: int = 256, nice: int = 10):
        if workers < 1 or max_queued < 0:
            raise ValueError("workers must be >= 1 and max_queued >= 0")
        self.workers, self.max_queued, self.keep = workers, max_queued, keep
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="earthloc-job",
                                        initializer=_lower_priority, initargs=(nice,))
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._active = 0  # queued + running
        self._lock = threading.Lock()
        self._mean_s = 5.0  # running mean of job durations, for Retry-After

    def submit(self, work: Callable[[Report], Any], on_failure: Callable[[BaseException], str] = str) -> Job:
        """Queue ``work``; its return value becomes ``job.result``. An exception fails the job with
        ``on_failure(exception)`` as its error. Raises :class:`QueueFull` at capacity."""
        with self._lock:
            if self._active >= self.workers + self.max_queued:
                waves = (self._active - self.workers) // self.workers + 1
                raise QueueFull(max(1, round(waves * self._mean_s)))
            job = Job(id=secrets.token_hex(16))
            self._jobs[job.id] = job
            self._active += 1
            self._forget_old()
        self._pool.submit(self._run, job, work, on_failure)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id (None: unknown or forgotten); read its fields under :meth:`snapshot` when running."""
        with self._lock:
            return self._jobs.get(job_id)

    def snapshot(self, job_id: str) -> dict | None:
        """The job's state as a dict (read under the lock), with its place in the queue when queued."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            out = {"id": job.id, "state": job.state, "stage": job.stage, "done": job.done, "total": job.total,
                   "error": job.error}
            if job.state == "queued":
                out["queue_position"] = sum(1 for j in self._jobs.values() if j.state == "queued" and j.created <= job.created)
            return out

    def close(self) -> None:
        """Stop taking jobs and wait for the running ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, work: Callable[[Report], Any], on_failure: Callable[[BaseException], str]) -> None:
        def report(stage: str, done: int, total: int) -> None:
            with self._lock:
                job.stage, job.done, job.total = stage, done, total

        with self._lock:
            job.state, job.stage, job.started = "running", "starting", time.monotonic()
        try:
            result = work(report)
        except BaseException as err:  # noqa: BLE001 - a job's failure is its result; the worker goes on
            with self._lock:
                job.state, job.error = "failed", on_failure(err)
        else:
            with self._lock:
                job.state, job.stage, job.result = "done", "done", result
        finally:
            with self._lock:
                job.finished = time.monotonic()
                self._active -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * (job.finished - job.started)
                self._forget_old()

    def _forget_old(self) -> None:
        """Drop the oldest finished jobs beyond ``keep`` (caller holds the lock)."""
        finished = [k for k, j in self._jobs.items() if j.finished is not None]
        for k in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[k]


def _lower_priority(nice: int) -> None:
    """Raise this thread's nice value by ``nice`` (Linux schedules threads one by one; elsewhere a no-op)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not permitted here: run at the server's priority
        pass
