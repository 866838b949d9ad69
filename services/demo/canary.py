"""The end of `lorafleet demo`: a second version of the demo task is trained
and canaried against the first on live traffic.

The second workflow asks for a canary rollout (25% -> 50% of the demo
deployment, then promotion); while its deploy step runs, demo traffic is sent
to the deployment so the canary's analysis has requests to judge, and every
rollout event (weight changes, analyses with their numbers, the promotion or
rollback) is printed as it happens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc

from lorafleet.client import Client
from lorafleet.v1 import common_pb2, gateway_pb2
from services.demo.orders import INSTRUCTION

PROMPTS = (
    "Hi, this is Ana Silva. Send 2 office chairs to Lisbon, please.",
    "Order from Tom Berg: 12 notebooks, deliver to Bergen.",
    "Please ship 3 monitors to Warsaw. Thanks, Piotr Nowak",
    "Jana Horak needs 5 keyboards in Prague.",
)
CANARY = gateway_pb2.RolloutSettings(
    strategy="canary",
    canary=gateway_pb2.CanarySettings(steps_bps=[2500, 5000], step_interval_s=10),
    # A demo's few requests: 6 canary requests per step, looked at twice a second.
    analysis=gateway_pb2.AnalysisSettings(min_requests=6),
    tick_s=0.5,
)


def canary_second_version(
    client: Client,
    request: gateway_pb2.RunWorkflowRequest,
    say: Callable[[str], None],
) -> int:
    """Runs `request` (the first workflow's, another seed) as a canary."""
    second = gateway_pb2.RunWorkflowRequest()
    second.CopyFrom(request)
    second.train_config.seed = request.train_config.seed + 1
    second.strategy = common_pb2.DEPLOYMENT_STRATEGY_CANARY
    second.rollout.CopyFrom(CANARY)
    job = client.run_workflow(second)
    job_id = job.status.job_id
    say(f"workflow      {job_id}: version 2 of {request.name}, deployed by a canary")
    started = time.time()
    stop = threading.Event()
    senders: list[threading.Thread] = []
    last_stage = ""
    for update in client.watch_workflow(job_id):
        event = update.event
        if event.stage != last_stage:
            message = event.message.removeprefix(f"{event.stage}: ")
            say(f"  [{time.time() - started:5.0f}s] {event.stage:<9} {message}")
            last_stage = event.stage
        if event.stage == "deploy" and not senders:
            senders = _start_traffic(client, request.deployment or request.name, stop)
            watcher = threading.Thread(
                target=_print_rollout,
                args=(client, job_id, started, say, stop),
                daemon=True,
            )
            watcher.start()
            senders.append(watcher)
    stop.set()
    for thread in senders:
        thread.join(60)
    final = client.get_workflow(job_id)
    if final.status.state != common_pb2.JOB_STATE_SUCCEEDED:
        say(f"canary        {final.status.error.code}: {final.status.error.message}")
        return 1
    d = final.result.deployment
    say(f"canary        promoted: {d.name} -> {d.model_id} (revision {d.revision})")
    return 0


def _start_traffic(
    client: Client, deployment: str, stop: threading.Event
) -> list[threading.Thread]:
    def send(worker: int) -> None:
        i = 0
        while not stop.is_set():
            prompt = PROMPTS[(worker + i) % len(PROMPTS)]
            try:
                client.gateway.Generate(
                    gateway_pb2.GenerateRequest(
                        deployment=deployment,
                        params=common_pb2.GenerationParams(
                            prompt=f"{INSTRUCTION}\n\n{prompt}", max_new_tokens=24
                        ),
                        routing_key=f"demo-user-{worker}-{i}",
                    ),
                    timeout=120,
                )
            except grpc.RpcError:
                time.sleep(0.5)  # counted by the gateway; keep the traffic going
            i += 1

    threads = [threading.Thread(target=send, args=(w,), daemon=True) for w in range(2)]
    for thread in threads:
        thread.start()
    return threads


def _print_rollout(
    client: Client,
    job_id: str,
    started: float,
    say: Callable[[str], None],
    stop: threading.Event,
) -> None:
    """Prints the workflow's rollout events once its deploy step names it."""
    rollout_id = ""
    while not rollout_id and not stop.is_set():
        job = client.get_workflow(job_id)
        rollout_id = next(
            (s.job_id for s in job.steps if s.name == "deploy" and s.job_id), ""
        )
        if not rollout_id:
            time.sleep(0.5)
    if not rollout_id:
        return
    say(f"  rollout     {rollout_id}")
    for update in client.gateway.WatchRollout(
        gateway_pb2.WatchRolloutRequest(rollout_id=rollout_id), timeout=3600
    ):
        e = update.event
        if e.kind == "job":
            continue
        numbers = ""
        if e.kind == "analysis":
            m = e.metrics
            numbers = (
                f" [canary {m.get('candidate_requests', 0):.0f} req, "
                f"{m.get('candidate_errors', 0):.0f} errors, p95 "
                f"{m.get('candidate_p95_ms', 0):.0f} ms vs stable "
                f"{m.get('stable_p95_ms', 0):.0f} ms]"
            )
        say(
            f"  [{time.time() - started:5.0f}s]   {e.kind:<11} "
            f"{e.candidate_weight_bps / 100:>4.0f}%  {e.message}{numbers}"
        )
