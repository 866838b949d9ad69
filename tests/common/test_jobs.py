"""The job engine: bounded queue, ordered events, cancel, watch resume, failures."""

from __future__ import annotations

import threading

import pytest

from services.common.errors import FailedPrecondition, NotFound, ResourceExhausted
from services.common.jobs import JobEngine, JobState


def test_queue_bound_refuses_with_resource_exhausted():
    gate = threading.Event()
    engine = JobEngine("demo", lambda ctx, spec: gate.wait(5), queue_size=2)
    first = engine.submit("a")
    while engine.get(first.id).state != JobState.RUNNING:
        pass
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

    engine = JobEngine("demo", runner)
    running = engine.submit(1)
    queued = engine.submit(2)
    assert started.wait(5)
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
    assert crash.error_code == "INTERNAL" and "kaput" in crash.error_message
    with pytest.raises(NotFound, match="no demo job has id 'x'"):
        engine.get("x")
    page, token = engine.list(None, 1, "")
    assert len(page) == 1 and token
    rest, last = engine.list(None, 5, token)
    assert len(rest) == 1 and last == ""
    engine.shutdown()
