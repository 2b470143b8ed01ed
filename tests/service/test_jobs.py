"""The job queue on its own: capacity and 429 estimate, progress, failures, forgetting old jobs, and the
workers' lower CPU priority."""

from __future__ import annotations

import os
import threading
import time

import pytest

from earthloc.service.jobs import JobQueue, QueueFull


def _wait(q: JobQueue, job_id: str) -> dict:
    deadline = time.time() + 30
    while (s := q.snapshot(job_id))["state"] not in ("done", "failed"):
        assert time.time() < deadline
        time.sleep(0.01)
    return s


def test_capacity_progress_failure_and_forgetting():
    q = JobQueue(workers=1, max_queued=2, keep=3)
    gate = threading.Event()

    def blocked(report):
        report("encoding", 1, 4)
        gate.wait(10)
        return "ok"

    jobs = [q.submit(blocked) for _ in range(3)]  # one running, two waiting
    with pytest.raises(QueueFull) as full:
        q.submit(blocked)
    assert full.value.retry_after_s >= 1
    deadline = time.time() + 10
    while q.snapshot(jobs[0].id)["stage"] != "encoding":
        assert time.time() < deadline
        time.sleep(0.01)
    s = q.snapshot(jobs[0].id)
    assert (s["state"], s["done"], s["total"]) == ("running", 1, 4)
    assert [q.snapshot(j.id)["queue_position"] for j in jobs[1:]] == [1, 2]
    gate.set()
    assert [_wait(q, j.id)["state"] for j in jobs] == ["done"] * 3 and q.get(jobs[0].id).result == "ok"

    def broken(report):
        raise ValueError("photo.jpg: cannot read image")

    bad = q.submit(broken, on_failure=lambda err: f"failed: {err}")
    assert _wait(q, bad.id)["error"] == "failed: photo.jpg: cannot read image"
    assert q.snapshot(jobs[0].id) is None  # keep=3: the oldest finished job is forgotten
    q.close()


def test_workers_run_at_lower_priority():
    q = JobQueue(workers=1, max_queued=0, nice=5)
    job = q.submit(lambda report: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    _wait(q, job.id)
    assert job.result == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    q.close()
