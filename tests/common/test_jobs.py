"""The in-memory job engine: bounded queue, ordered events, cancel, watch resume,
failures, idempotent submission."""

from __future__ import annotations

import threading
import time

import pytest

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
)
from services.common.jobs import JobState
from services.common.jobs import MemoryJobEngine as JobEngine
from tests.common.jobqueue.support import wait_for


def test_queue_bound_refuses_with_resource_exhausted():
    gate = threading.Event()
    engine = JobEngine("demo", lambda ctx, spec: gate.wait(), queue_size=2)
    first = engine.submit("a")
    wait_for(lambda: engine.get(first.id).state == JobState.RUNNING)
    engine.submit("b")
    engine.submit("c")
    with pytest.raises(ResourceExhausted, match="queue is full"):
        engine.submit("d")
    gate.set()
    engine.shutdown(5)


def test_events_are_ordered_and_watch_resumes_after_a_sequence():
    def runner(ctx, spec):
        for step in range(1, 4):
            ctx.report(stage="work", progress=step / 3, step=step, total_steps=3)
        return "done"

    engine = JobEngine("demo", runner)
    job = engine.submit(None)
    events = [e for e, _ in engine.watch(job.id)]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.step for e in events if e.stage == "work"] == [1, 2, 3]
    assert (
        events[-1].state == JobState.SUCCEEDED and engine.get(job.id).result == "done"
    )
    resumed = [e.sequence for e, _ in engine.watch(job.id, after_sequence=3)]
    assert resumed == list(range(4, len(events) + 1))
    engine.shutdown()


def test_cancel_stops_a_running_job_and_a_queued_one():
    started = threading.Event()

    def runner(ctx, spec):
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.01)

    engine = JobEngine("demo", runner)
    running = engine.submit(1)
    queued = engine.submit(2)
    assert started.wait(60)
    engine.cancel(queued.id)
    assert engine.get(queued.id).state == JobState.CANCELLED
    engine.cancel(running.id)
    list(engine.watch(running.id))
    assert engine.get(running.id).state == JobState.CANCELLED
    engine.shutdown()


def test_failures_keep_their_status_code_and_unknown_ids_are_not_found():
    def runner(ctx, spec):
        if spec == "domain":
            raise FailedPrecondition("adapter base differs")
        raise RuntimeError("kaput")

    engine = JobEngine("demo", runner)
    domain, crash = engine.submit("domain"), engine.submit("crash")
    list(engine.watch(domain.id))
    list(engine.watch(crash.id))
    assert (domain.error_code, domain.error_message) == (
        "FAILED_PRECONDITION",
        "adapter base differs",
    )
    assert crash.error_code == "INTERNAL" and "kaput" not in crash.error_message
    assert "internal error (RuntimeError) in demo job" in crash.error_message
    with pytest.raises(NotFound, match="no demo job has id 'x'"):
        engine.get("x")
    page, token = engine.list(None, 1, "")
    assert len(page) == 1 and token
    rest, last = engine.list(None, 5, token)
    assert len(rest) == 1 and last == ""
    engine.shutdown()


def test_a_request_id_returns_the_first_job():
    gate = threading.Event()
    engine = JobEngine("demo", lambda ctx, spec: gate.wait())
    first = engine.submit("a", request_id="r1", digest="x")
    assert engine.submit("a", request_id="r1", digest="x") is first
    assert engine.find("r1").id == first.id
    with pytest.raises(AlreadyExists, match="used for a different request"):
        engine.submit("b", request_id="r1", digest="y")
    gate.set()
    engine.shutdown(5)


def test_recorded_details_are_visible_on_the_job():
    def runner(ctx, spec):
        ctx.record(step="merge", merge_job_id="m-1")
        ctx.set_resumed_from_step(4)
        return ctx.details

    engine = JobEngine("demo", runner)
    job = engine.submit(None)
    list(engine.watch(job.id))
    assert job.details == {"step": "merge", "merge_job_id": "m-1"}
    assert job.result == job.details and job.resumed_from_step == 4
    assert job.attempt == 1
    engine.shutdown()
