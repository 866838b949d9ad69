"""Rollouts over real gRPC: canary promotion and automatic rollback, A/B
conclusions, blue-green instant rollback, shadow runs, take-over after a
gateway is killed, and every refused request leaving nothing behind.

The inference service is a fake whose faults are deterministic; the
controller ticks every 20 ms and steps need no time (interval 0), so tests
wait only for events, never for a wall-clock bound.
"""

from __future__ import annotations

import time

import grpc
import pytest

from lorafleet.v1 import gateway_pb2, registry_pb2
from tests.common.jobqueue.support import wait_for
from tests.gateway.rollout_support import Behaviour, RolloutBed

FAST = dict(tick_s=0.02)
ANALYSIS = gateway_pb2.AnalysisSettings(min_requests=20)


@pytest.fixture(scope="module")
def bed(tmp_path_factory, tiny_model_dir):
    bed = RolloutBed(tmp_path_factory.mktemp("rollouts"), tiny_model_dir)
    yield bed
    bed.stop()


def generate(bed, deployment: str, n: int, key: str = "") -> list[str]:
    arms = []
    for i in range(n):
        try:
            reply = bed.gateway.Generate(
                gateway_pb2.GenerateRequest(
                    deployment=deployment,
                    params={"prompt": "hi", "max_new_tokens": 2},
                    routing_key=f"{key}{i}" if key else "",
                ),
                timeout=30,
            )
            arms.append(reply.arm)
        except grpc.RpcError:
            arms.append("error")
    return arms


def start(bed, deployment: str, candidate: str, **settings) -> gateway_pb2.Rollout:
    request = gateway_pb2.StartRolloutRequest(
        deployment=deployment,
        model_id=candidate,
        settings=gateway_pb2.RolloutSettings(**{**FAST, **settings}),
    )
    return bed.gateway.StartRollout(request, timeout=30).rollout


def get(bed, rollout_id: str) -> gateway_pb2.Rollout:
    return bed.gateway.GetRollout(
        gateway_pb2.GetRolloutRequest(rollout_id=rollout_id), timeout=30
    ).rollout


def drive_until_done(bed, deployment, rollout_id, batch=10, timeout_s=300.0):
    """Sends traffic until the rollout ends; the number of requests sent.

    Bounded by time, like `wait_for`, only to stop a hung test: how many
    requests a rollout takes depends on how fast this machine serves them
    while each step waits out the routers' cache (`ROUTING_SETTLE_S`).
    """
    sent, deadline = 0, time.monotonic() + timeout_s
    while get(bed, rollout_id).state in (
        gateway_pb2.ROLLOUT_STATE_PENDING,
        gateway_pb2.ROLLOUT_STATE_PROGRESSING,
    ):
        assert time.monotonic() < deadline, (
            sent,
            get(bed, rollout_id).last_analysis.reason,
            [
                (a.arm, a.requests, a.shadow_dropped, a.latency_p95_ms)
                for a in bed.gateway.GetDeploymentMetrics(
                    gateway_pb2.GetDeploymentMetricsRequest(deployment=deployment),
                    timeout=30,
                ).arms
            ],
        )
        generate(bed, deployment, batch)
        sent += batch
    return sent


def wait_routed(bed, deployment: str, arms: set[str]) -> None:
    """Until the gateway routes to all of `arms` (its routing cache refreshes
    within about a second of a change)."""
    wait_for(lambda: set(generate(bed, deployment, 20, key="probe-")) >= arms)


def events(bed, rollout_id):
    return list(
        bed.gateway.WatchRollout(
            gateway_pb2.WatchRolloutRequest(rollout_id=rollout_id), timeout=60
        )
    )


def test_a_healthy_canary_is_promoted_and_the_alias_moves(bed):
    stable = bed.version("svc-a")
    candidate = bed.version("svc-a")  # version 2 of the same name
    bed.deploy("canary-ok", stable)
    rollout = start(
        bed,
        "canary-ok",
        candidate,
        strategy="canary",
        canary=gateway_pb2.CanarySettings(
            steps_bps=[2000, 5000], step_interval_s=0.001
        ),
        analysis=ANALYSIS,
    )
    assert rollout.state in (
        gateway_pb2.ROLLOUT_STATE_PENDING,
        gateway_pb2.ROLLOUT_STATE_PROGRESSING,
    )
    drive_until_done(bed, "canary-ok", rollout.id)
    done = get(bed, rollout.id)
    assert done.state == gateway_pb2.ROLLOUT_STATE_PROMOTED, done.message
    deployment = bed.registry.GetDeployment(
        registry_pb2.GetDeploymentRequest(name="canary-ok"), timeout=10
    ).deployment
    assert [(t.model_id, t.weight_bps) for t in deployment.targets] == [
        (candidate, 10000)
    ]
    alias = bed.registry.ResolveAlias(
        registry_pb2.ResolveAliasRequest(name="svc-a", alias="production"), timeout=10
    )
    assert alias.artifact.id == candidate
    seen = [(e.event.kind, e.event.message) for e in events(bed, rollout.id)]
    assert [k for k, _ in seen if k in ("started", "promoted")] == [
        "started",
        "promoted",
    ], seen
    weights = [
        e.event.candidate_weight_bps
        for e in events(bed, rollout.id)
        if e.event.kind == "weight"
    ]
    assert weights == [2000, 5000]
    passes = [
        e.event
        for e in events(bed, rollout.id)
        if e.event.kind == "analysis" and e.event.message.startswith("pass")
    ]
    assert len(passes) == 2 and passes[0].metrics["candidate_requests"] >= 20


def deployment_of(bed, name: str):
    return bed.registry.GetDeployment(
        registry_pb2.GetDeploymentRequest(name=name), timeout=10
    ).deployment


def test_a_failing_canary_is_rolled_back_with_its_numbers_in_the_audit_log(bed):
    stable, candidate = bed.version("svc-b"), bed.version("svc-b")
    bed.inference.behaviours[candidate] = Behaviour(error_every=3)
    bed.deploy("canary-bad", stable)
    rollout = start(
        bed,
        "canary-bad",
        candidate,
        canary=gateway_pb2.CanarySettings(steps_bps=[5000], step_interval_s=3600),
        analysis=ANALYSIS,
    )
    drive_until_done(bed, "canary-bad", rollout.id)
    done = get(bed, rollout.id)
    assert done.state == gateway_pb2.ROLLOUT_STATE_ROLLED_BACK
    assert "error rate" in done.message and "sequential test" in done.message
    assert done.last_analysis.decision == "fail"
    assert done.last_analysis.candidate.errors["UNAVAILABLE"] >= 1
    current = deployment_of(bed, "canary-bad")
    assert [(t.model_id, t.weight_bps) for t in current.targets] == [(stable, 10000)]
    audit = bed.registry.ListAuditEvents(
        registry_pb2.ListAuditEventsRequest(
            target="canary-bad", action="deployment.put"
        ),
        timeout=10,
    ).events
    reasons = [e.after["reason"] for e in audit]
    assert any("rolled back" in r and "error rate" in r for r in reasons), reasons
    # The alias was never moved.
    with pytest.raises(grpc.RpcError) as err:
        bed.registry.ResolveAlias(
            registry_pb2.ResolveAliasRequest(name="svc-b", alias="production"),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Finished: promote and abort are refused, naming the state.
    for call in (bed.gateway.PromoteRollout, bed.gateway.AbortRollout):
        with pytest.raises(grpc.RpcError) as err:
            call(
                gateway_pb2.PromoteRolloutRequest(rollout_id=rollout.id)
                if call == bed.gateway.PromoteRollout
                else gateway_pb2.AbortRolloutRequest(rollout_id=rollout.id),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "has finished (ROLLED_BACK)" in err.value.details()


def test_an_ab_test_concludes_with_a_winner(bed):
    stable, candidate = bed.version("svc-c"), bed.version("svc-c")
    bed.inference.behaviours[stable] = Behaviour(text="not json")  # quality fails
    bed.deploy("ab", stable)
    bed.registry.PutDeployment(
        registry_pb2.PutDeploymentRequest(
            name="ab", model_id=stable, output_format="json"
        ),
        timeout=10,
    )
    rollout = start(
        bed,
        "ab",
        candidate,
        strategy="ab_test",
        ab_test=gateway_pb2.AbTestSettings(duration_s=3600),
        manual_decision=True,
        analysis=gateway_pb2.AnalysisSettings(min_requests=5),
    )
    # Requests count once every replica routes by the split (the weight event).
    wait_for(lambda: get(bed, rollout.id).candidate_weight_bps == 5000)
    arm = get(bed, rollout.id).candidate.arm
    assert arm == f"candidate-{rollout.id[-6:]}"  # this rollout's own arm
    wait_routed(bed, "ab", {"stable", arm})
    generate(bed, "ab", 40, key="user-")
    result = bed.gateway.ConcludeExperiment(
        gateway_pb2.ConcludeExperimentRequest(rollout_id=rollout.id), timeout=60
    ).result
    assert result.winner == arm and result.significant, result
    by_arm = {a.arm: a for a in result.arms}
    assert by_arm[arm].success_rate == 1.0
    assert by_arm["stable"].success_rate == 0.0
    assert by_arm[arm].success_rate_low > by_arm["stable"].success_rate_high
    assert f"{arm} is better" in result.summary
    wait_for(
        lambda: (
            get(bed, rollout.id).state == gateway_pb2.ROLLOUT_STATE_AWAITING_DECISION
        )
    )
    bed.gateway.PromoteRollout(
        gateway_pb2.PromoteRolloutRequest(rollout_id=rollout.id, reason="ship it"),
        timeout=10,
    )
    wait_for(lambda: get(bed, rollout.id).state == gateway_pb2.ROLLOUT_STATE_PROMOTED)
    assert "promoted by the operator: ship it" in get(bed, rollout.id).message
    assert deployment_of(bed, "ab").model_id == candidate
    assert deployment_of(bed, "ab").output_format == "json"  # settings kept


def test_blue_green_switches_at_once_and_rolls_back_instantly(bed):
    stable, candidate = bed.version("svc-d"), bed.version("svc-d")
    bed.deploy("bg", stable)
    rollout = start(
        bed,
        "bg",
        candidate,
        strategy="blue_green",
        blue_green=gateway_pb2.BlueGreenSettings(
            warmup_requests=2, keep_previous_s=3600
        ),
    )
    wait_for(lambda: get(bed, rollout.id).candidate_weight_bps == 10000)
    assert bed.inference.calls.get(candidate, 0) >= 2  # warmed up before the switch
    switched = deployment_of(bed, "bg")
    assert {(t.arm, t.model_id) for t in switched.targets} == {
        ("stable", candidate),
        ("previous", stable),
    }
    assert set(generate(bed, "bg", 5)) == {"stable"}
    loads_before = list(bed.inference.loaded)
    bed.gateway.AbortRollout(
        gateway_pb2.AbortRolloutRequest(rollout_id=rollout.id, reason="pager"),
        timeout=10,
    )
    wait_for(
        lambda: get(bed, rollout.id).state == gateway_pb2.ROLLOUT_STATE_ROLLED_BACK
    )
    assert deployment_of(bed, "bg").model_id == stable
    assert bed.inference.loaded == loads_before  # nothing had to be loaded
    assert "aborted by the operator: pager" in get(bed, rollout.id).message


def shadow(bed, candidate: str) -> gateway_pb2.Rollout:
    return start(
        bed,
        "shadowed",
        candidate,
        strategy="shadow",
        shadow=gateway_pb2.ShadowSettings(sample_size=8, duration_s=3600),
        analysis=gateway_pb2.AnalysisSettings(min_requests=8),
    )


def test_shadow_copies_never_delay_callers_and_are_judged(bed):
    stable, healthy, slow, stuck = (bed.version("svc-e") for _ in range(4))
    bed.deploy("shadowed", stable)
    # A shadow that answers like stable is promoted, with its agreement ...
    first = shadow(bed, healthy)
    drive_until_done(bed, "shadowed", first.id, batch=4)
    done = get(bed, first.id)
    assert done.state == gateway_pb2.ROLLOUT_STATE_PROMOTED, done.message
    assert "agreement 100.0%" in done.message
    # ... one slower than stable on every copy is rolled back for it ...
    bed.inference.behaviours[slow] = Behaviour(sleep_s=0.5)
    second = shadow(bed, slow)
    drive_until_done(bed, "shadowed", second.id, batch=4)
    done = get(bed, second.id)
    assert done.state == gateway_pb2.ROLLOUT_STATE_ROLLED_BACK, done.message
    assert "slow rate" in done.message or "p95_latency_ratio" in done.message
    # ... and callers never wait for a shadow, even one that hangs.
    bed.inference.behaviours[stuck] = Behaviour(delay_s=600)
    bed.inference.release.clear()
    try:
        third = shadow(bed, stuck)
        wait_for(lambda: get(bed, third.id).candidate_weight_bps == 10000)
        assert generate(bed, "shadowed", 8) == ["stable"] * 8
        bed.gateway.AbortRollout(
            gateway_pb2.AbortRolloutRequest(rollout_id=third.id), timeout=10
        )
        wait_for(
            lambda: get(bed, third.id).state == gateway_pb2.ROLLOUT_STATE_ROLLED_BACK
        )
    finally:
        bed.inference.release.set()


def test_sticky_arms_survive_a_gateway_restart(bed):
    stable, candidate = bed.version("svc-f"), bed.version("svc-f")
    bed.deploy("sticky", stable)
    rollout = start(
        bed,
        "sticky",
        candidate,
        canary=gateway_pb2.CanarySettings(steps_bps=[3000], step_interval_s=3600),
    )
    wait_for(lambda: get(bed, rollout.id).candidate_weight_bps == 3000)
    arm = get(bed, rollout.id).candidate.arm
    wait_routed(bed, "sticky", {"stable", arm})
    before = generate(bed, "sticky", 40, key="user-")
    assert {"stable", arm} == set(before)
    bed.gateway_server.stop(0.5)
    bed.start_gateway()
    assert generate(bed, "sticky", 40, key="user-") == before


def test_a_killed_gateway_resumes_the_canary_at_its_step(bed):
    stable, candidate = bed.version("svc-g"), bed.version("svc-g")
    bed.deploy("resumed", stable)
    rollout = start(
        bed,
        "resumed",
        candidate,
        canary=gateway_pb2.CanarySettings(
            steps_bps=[2000, 5000], step_interval_s=0.001
        ),
        analysis=ANALYSIS,
    )

    def weights():
        return [
            e.event.candidate_weight_bps
            for e in events(bed, rollout.id)
            if e.event.kind == "weight"
        ]

    while get(bed, rollout.id).candidate_weight_bps != 5000:
        generate(bed, "resumed", 10)
    revision = deployment_of(bed, "resumed").revision
    bed.kill_gateway()
    bed.start_gateway()
    # A new process's first calls are slow (connections, caches); warm it up
    # on another deployment so they do not count as the canary's latency.
    bed.deploy("resumed-warmup", stable)
    generate(bed, "resumed-warmup", 20)
    drive_until_done(bed, "resumed", rollout.id)
    done = get(bed, rollout.id)
    assert done.state == gateway_pb2.ROLLOUT_STATE_PROMOTED, done.message
    assert done.attempt == 2
    assert weights() == [2000, 5000]  # step 2 was not started again
    # One more revision: the promotion. Nothing was written twice.
    assert deployment_of(bed, "resumed").revision == revision + 1


def refused(bed, code, words, **fields):
    settings = fields.pop("settings", {})
    request = gateway_pb2.StartRolloutRequest(
        settings=gateway_pb2.RolloutSettings(**{**FAST, **settings}), **fields
    )
    with pytest.raises(grpc.RpcError) as err:
        bed.gateway.StartRollout(request, timeout=30)
    assert err.value.code() == code, err.value.details()
    assert words in err.value.details(), err.value.details()
    return err.value


def test_bad_rollouts_are_refused_and_change_nothing(bed):
    stable, candidate = bed.version("svc-h"), bed.version("svc-h")
    unvalidated = bed.version("svc-h", passed=None)
    failed = bed.version("svc-h", passed=False)
    unloadable = bed.version("svc-h")
    elsewhere = bed.version("svc-h", base_digest="sha256:" + "0" * 64)
    bed.inference.behaviours[unloadable] = Behaviour(loadable=False)
    bed.deploy("guarded", stable)
    revision = deployment_of(bed, "guarded").revision
    invalid, precondition = (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    ok = dict(deployment="guarded", model_id=candidate)
    cases = [
        (invalid, "known strategies: replace", dict(settings={"strategy": "yolo"})),
        (
            invalid,
            "must increase: step 1 is 500 after 2000",
            dict(settings={"canary": {"steps_bps": [2000, 500]}}),
        ),
        (
            invalid,
            "steps_bps[1] must be in (0, 10000]",
            dict(settings={"canary": {"steps_bps": [500, 20000]}}),
        ),
        (
            invalid,
            "steps_bps[0] must be in (0, 10000]",
            dict(settings={"canary": {"steps_bps": [-500]}}),
        ),
        (
            invalid,
            "candidate_weight_bps must be in (0, 9999]",
            dict(
                settings={
                    "strategy": "ab_test",
                    "ab_test": {"candidate_weight_bps": 10000},
                }
            ),
        ),
        (
            invalid,
            "max_error_rate must be in [0, 1]",
            dict(settings={"analysis": {"max_error_rate": 2.0}}),
        ),
        (invalid, "force needs a reason", dict(force=True)),
        (grpc.StatusCode.NOT_FOUND, "no-such", dict(deployment="no-such")),
        (grpc.StatusCode.NOT_FOUND, "nope", dict(model_id="nope:1")),
        (precondition, "serves already", dict(model_id=stable)),
        (precondition, "has no validation report", dict(model_id=unvalidated)),
        (
            precondition,
            "did not pass (failed gates: min_safety_score: safety score 0.620 vs "
            "minimum 0.95)",
            dict(model_id=failed),
        ),
        (precondition, "inference cannot load", dict(model_id=unloadable)),
        (precondition, "built on another base model", dict(model_id=elsewhere)),
    ]
    for code, words, fields in cases:
        refused(bed, code, words, **{**ok, **fields})
    assert deployment_of(bed, "guarded").revision == revision
    listed = bed.gateway.ListRollouts(
        gateway_pb2.ListRolloutsRequest(deployment="guarded"), timeout=10
    ).rollouts
    assert list(listed) == []
    # A second rollout while one runs names the running one.
    first = bed.gateway.StartRollout(
        gateway_pb2.StartRolloutRequest(
            deployment="guarded",
            model_id=failed,
            force=True,
            reason="hotfix approved by on-call",
            settings=gateway_pb2.RolloutSettings(
                canary=gateway_pb2.CanarySettings(
                    steps_bps=[1000], step_interval_s=3600
                ),
                **FAST,
            ),
        ),
        timeout=30,
    ).rollout
    assert first.forced and first.reason == "hotfix approved by on-call"
    error = refused(bed, precondition, first.id, **ok)
    assert "rollout in progress" in error.details()
    with pytest.raises(grpc.RpcError) as err:  # a manual deploy would be undone
        bed.deploy("guarded", candidate)
    assert err.value.code() == precondition and first.id in err.value.details()
    wait_for(lambda: deployment_of(bed, "guarded").revision > revision)
    audit = bed.registry.ListAuditEvents(
        registry_pb2.ListAuditEventsRequest(target="guarded", action="deployment.put"),
        timeout=10,
    ).events
    assert any(
        "[forced: hotfix approved by on-call]" in e.after["reason"] for e in audit
    ), [e.after["reason"] for e in audit]
    bed.gateway.AbortRollout(
        gateway_pb2.AbortRolloutRequest(rollout_id=first.id), timeout=10
    )
    wait_for(lambda: get(bed, first.id).state == gateway_pb2.ROLLOUT_STATE_ROLLED_BACK)
    # The deployment is free again.
    again = start(bed, "guarded", candidate, strategy="replace")
    wait_for(lambda: get(bed, again.id).state == gateway_pb2.ROLLOUT_STATE_PROMOTED)
    with pytest.raises(grpc.RpcError) as err:
        bed.gateway.GetRollout(
            gateway_pb2.GetRolloutRequest(rollout_id="rollout-nope"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        bed.gateway.Generate(
            gateway_pb2.GenerateRequest(
                deployment="guarded",
                params={"prompt": "x"},
                routing_key="k" * 257,
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pause_holds_the_step_and_resume_continues(bed):
    stable, candidate = bed.version("svc-i"), bed.version("svc-i")
    bed.deploy("paused", stable)
    rollout = start(
        bed,
        "paused",
        candidate,
        canary=gateway_pb2.CanarySettings(
            steps_bps=[2000, 5000], step_interval_s=0.001
        ),
        analysis=ANALYSIS,
    )
    bed.gateway.PauseRollout(
        gateway_pb2.PauseRolloutRequest(rollout_id=rollout.id, reason="lunch"),
        timeout=10,
    )
    wait_for(lambda: get(bed, rollout.id).state == gateway_pb2.ROLLOUT_STATE_PAUSED)
    generate(bed, "paused", 200)  # plenty for a step: still held while paused
    assert get(bed, rollout.id).candidate_weight_bps == 2000
    bed.gateway.ResumeRollout(
        gateway_pb2.ResumeRolloutRequest(rollout_id=rollout.id), timeout=10
    )
    wait_for(lambda: get(bed, rollout.id).state != gateway_pb2.ROLLOUT_STATE_PAUSED)
    drive_until_done(bed, "paused", rollout.id)
    assert get(bed, rollout.id).state == gateway_pb2.ROLLOUT_STATE_PROMOTED
    kinds = [e.event.kind for e in events(bed, rollout.id)]
    assert kinds.index("paused") < kinds.index("resumed") < kinds.index("promoted")
