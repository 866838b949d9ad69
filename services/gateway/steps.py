"""A workflow's steps and how their progress is recorded in the job's details.

The details of a workflow job hold, per step, its state, sub-job id, the
sequence of the sub-job's last relayed event ("cursor"), its try number
and output, and the outcome so far. The durable job engine persists them
with every change, so an attempt that takes the workflow over (after its
gateway died) or a ResumeWorkflow continues from them.
"""

from __future__ import annotations

from typing import Any

STEPS = (
    "register_dataset",
    "train",
    "merge",
    "validate",
    "gate",
    "alias",
    "deploy",
)
# The steps that run a sub-job on another service.
SUB_JOB_STEPS = ("train", "merge", "validate")
# Share of overall progress each step covers (start, end).
PROGRESS = {
    "register_dataset": (0.0, 0.02),
    "train": (0.02, 0.60),
    "merge": (0.60, 0.70),
    "validate": (0.70, 0.93),
    "gate": (0.93, 0.94),
    "alias": (0.94, 0.95),
    "deploy": (0.95, 1.0),
}
QUEUED, RUNNING, SUCCEEDED = "QUEUED", "RUNNING", "SUCCEEDED"
FAILED, CANCELLED = "FAILED", "CANCELLED"


def initial_details(dataset: Any, existed: bool, train_job_id: str) -> dict[str, Any]:
    """The details a workflow starts with: dataset registered, training started."""
    how = "given" if existed else "registered"
    return {
        "steps": {
            "register_dataset": {
                "state": SUCCEEDED,
                "output": dataset.id,
                "message": f"dataset {dataset.name}:{dataset.version} {how}",
            },
            "train": {"state": RUNNING, "job_id": train_job_id, "try": 0, "cursor": 0},
        },
        "outcome": {"dataset_id": dataset.id},
    }


def for_resume(details: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Details for running a failed or cancelled workflow again, and the step it
    continues at: that step is marked for a retry (a new sub-job if its old
    one failed); completed steps keep their outcomes."""
    steps = {name: dict(rec) for name, rec in details.get("steps", {}).items()}
    first = ""
    for name in STEPS:
        rec = steps.get(name)
        if rec is None or rec.get("state") == SUCCEEDED:
            continue
        rec["state"] = QUEUED
        rec["retry"] = True
        first = first or name
    return {**details, "steps": steps}, first
