"""Weighted, sticky routing between the arms of a deployment.

The split is exact in distribution (chi-square over 100,000 decisions), a
routing key keeps its arm across router restarts and only moves into a
canary as its weight grows, and the registry refuses targets that could not
be routed as written. Over gRPC: arms chosen by key or forced by metadata,
recorded on the response and the span.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import grpc
import pytest

from lorafleet.v1 import common_pb2, gateway_pb2, registry_pb2
from services.cli.models import import_model
from services.common.errors import InvalidArgument, NotFound
from services.gateway.arms import Arm, ArmChooser, key_point

STABLE, CANDIDATE = common_pb2.TARGET_ROLE_STABLE, common_pb2.TARGET_ROLE_CANDIDATE


def arms(*weights: tuple[str, int, int]) -> list[Arm]:
    return [Arm(name, f"m-{name}", "", "", w, role) for name, w, role in weights]


def chi2_p(observed: Counter, expected: dict[str, float]) -> float:
    """p-value of Pearson's chi-square for 2 or 3 categories (closed forms)."""
    x = sum((observed[k] - e) ** 2 / e for k, e in expected.items())
    dof = len(expected) - 1
    if dof == 1:
        return math.erfc(math.sqrt(x / 2))
    assert dof == 2
    return math.exp(-x / 2)


@pytest.mark.parametrize(
    "split",
    [
        {"stable": 9000, "canary": 1000},
        {"stable": 7000, "canary": 2000, "canary-2": 1000},
    ],
)
def test_the_split_is_exact_in_distribution(split):
    layout = arms(
        *[(n, w, STABLE if n == "stable" else CANDIDATE) for n, w in split.items()]
    )
    chooser = ArmChooser(random.Random(20261204))
    n = 100_000
    seen = Counter(chooser.choose("d", layout).name for _ in range(n))
    expected = {name: n * w / 10_000 for name, w in split.items()}
    assert chi2_p(seen, expected) > 0.01, seen
    # The check can fail: a 5-point skew is rejected.
    skewed = Counter({"stable": 90_500, "canary": 9_500})
    assert chi2_p(skewed, {"stable": 90_000, "canary": 10_000}) < 0.01


def test_a_key_keeps_its_arm_and_only_moves_into_a_growing_canary():
    keys = [f"user-{i}" for i in range(10_000)]
    at_10 = arms(("stable", 9000, STABLE), ("canary", 1000, CANDIDATE))
    at_25 = arms(("stable", 7500, STABLE), ("canary", 2500, CANDIDATE))
    before = {k: ArmChooser().choose("d", at_10, routing_key=k).name for k in keys}
    restarted = ArmChooser()  # another process, another replica: same answer
    again = {k: restarted.choose("d", at_10, routing_key=k).name for k in keys}
    after = {k: restarted.choose("d", at_25, routing_key=k).name for k in keys}
    assert again == before
    in_canary = [k for k in keys if before[k] == "canary"]
    assert all(after[k] == "canary" for k in in_canary)  # never moved out
    moved = sum(1 for k in keys if before[k] == "stable" and after[k] == "canary")
    assert 0.12 < moved / len(keys) < 0.18  # about the 15 points added
    assert 0.08 < len(in_canary) / len(keys) < 0.12
    # Deployments split independently: one user is not in every canary.
    assert key_point("d", "user-1") != key_point("e", "user-1") or key_point(
        "d", "user-2"
    ) != key_point("e", "user-2")


def test_forced_arms_and_bad_routing_keys():
    layout = arms(
        ("stable", 10000, STABLE), ("blue", 0, common_pb2.TARGET_ROLE_STANDBY)
    )
    chooser = ArmChooser()
    assert chooser.choose("d", layout, forced_arm="blue").name == "blue"
    with pytest.raises(NotFound, match="has no arm 'green'; its arms are stable, blue"):
        chooser.choose("d", layout, forced_arm="green")
    with pytest.raises(InvalidArgument, match="257 bytes; at most 256") as err:
        chooser.choose("d", layout, routing_key="k" * 257)
    assert err.value.field == "routing_key"
    assert chooser.choose("d", layout, routing_key="k" * 256).name == "stable"


# --- over gRPC ----------------------------------------------------------------


def _target(model_id: str, arm: str, weight: int, role: int, **kw):
    return common_pb2.DeploymentTarget(
        model_id=model_id, arm=arm, weight_bps=weight, role=role, **kw
    )


@pytest.fixture(scope="module")
def two_models(suite, workflow, base_model):
    merged = workflow[1][-1].job.result.merged_model_id
    return base_model.id, merged


@pytest.mark.parametrize(
    ("targets", "code", "words"),
    [
        (
            lambda b, m: [
                _target(b, "stable", 9000, STABLE),
                _target(m, "c", 2000, CANDIDATE),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "sum to 11000",
        ),
        (
            lambda b, m: [
                _target(b, "stable", 11000, STABLE),
                _target(m, "c", -1000, CANDIDATE),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "weight_bps must be in [0, 10000]",
        ),
        (
            lambda b, m: [_target(b, "a", 5000, STABLE), _target(m, "b", 5000, STABLE)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "exactly one STABLE target",
        ),
        (
            lambda b, m: [
                _target(b, "a", 5000, STABLE),
                _target(m, "a", 5000, CANDIDATE),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "'a' is used twice",
        ),
        (
            lambda b, m: [_target(b, "Stable!", 10000, STABLE)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "arm 'Stable!' must match",
        ),
        (
            lambda b, m: [
                _target(b, "stable", 10000, STABLE),
                _target(m, "shadow", 0, common_pb2.TARGET_ROLE_SHADOW),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "mirror_bps must be in (0, 10000]",
        ),
        (
            lambda b, m: [_target(b, "stable", 10000, 0)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "role is unset or unknown",
        ),
    ],
)
def test_the_registry_refuses_targets_that_cannot_be_routed(
    suite, two_models, targets, code, words
):
    registry = suite.stub("registry")
    with pytest.raises(grpc.RpcError) as err:
        registry.PutDeployment(
            registry_pb2.PutDeploymentRequest(
                name="routing-bad", targets=targets(*two_models)
            ),
            timeout=30,
        )
    assert err.value.code() == code, err.value.details()
    assert words in err.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name="routing-bad"), timeout=10
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing written


def test_an_adapter_of_another_base_is_refused(suite, workflow, tiny_model_factory):
    other = import_model(
        tiny_model_factory("gpt2"),
        "tiny-gpt2-routing",
        suite.config.staging_dir,
        suite.stub("registry"),
    )
    adapter = workflow[1][-1].job.result.adapter_id
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("registry").PutDeployment(
            registry_pb2.PutDeploymentRequest(
                name="routing-other-base",
                targets=[
                    common_pb2.DeploymentTarget(
                        model_id=other.id,
                        adapter_id=adapter,
                        arm="stable",
                        weight_bps=10000,
                        role=STABLE,
                    )
                ],
            ),
            timeout=30,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "was trained on another base" in err.value.details()


def test_requests_reach_their_arm_by_key_or_by_force(suite, two_models, span_exporter):
    base, merged = two_models
    registry, gateway = suite.stub("registry"), suite.stub("gateway")
    put = registry.PutDeployment(
        registry_pb2.PutDeploymentRequest(
            name="routing-canary",
            targets=[
                _target(base, "stable", 5000, STABLE),
                _target(merged, "canary", 5000, CANDIDATE),
            ],
            reason="canary at 50%",
        ),
        timeout=30,
    ).deployment
    assert [(t.arm, t.weight_bps) for t in put.targets] == [
        ("stable", 5000),
        ("canary", 5000),
    ]
    assert put.model_id == base and all(
        t.digest.startswith("sha256:") for t in put.targets
    )
    params = common_pb2.GenerationParams(prompt="Order for Ana", max_new_tokens=1)

    def generate(key: str = "", arm: str = "") -> gateway_pb2.GenerateResponse:
        metadata = [("x-lorafleet-arm", arm)] if arm else []
        return gateway.Generate(
            gateway_pb2.GenerateRequest(
                deployment="routing-canary", params=params, routing_key=key
            ),
            metadata=metadata,
            timeout=120,
        )

    by_key = {}
    for key in (f"user-{i}" for i in range(8)):
        first, second = generate(key), generate(key)
        assert first.arm == second.arm  # sticky
        assert first.model_id == (merged if first.arm == "canary" else base)
        assert first.deployment_revision == put.revision
        by_key[key] = first.arm
    assert set(by_key.values()) == {"stable", "canary"}  # both arms serve
    forced = generate(arm="canary")
    assert (forced.arm, forced.model_id) == ("canary", merged)
    stream = list(
        gateway.GenerateStream(
            gateway_pb2.GenerateStreamRequest(
                deployment="routing-canary", params=params
            ),
            metadata=[("x-lorafleet-routing-key", "user-0")],
            timeout=120,
        )
    )
    assert {c.arm for c in stream} == {by_key["user-0"]}
    with pytest.raises(grpc.RpcError) as err:
        generate(arm="green")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "its arms are stable, canary" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        generate(key="k" * 300)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    spans = [
        s
        for s in span_exporter.get_finished_spans()
        if s.attributes.get("lorafleet.deployment") == "routing-canary"
    ]
    assert {s.attributes["lorafleet.arm"] for s in spans} == {"stable", "canary"}
    assert all(
        s.attributes["lorafleet.deployment_revision"] == put.revision for s in spans
    )


def test_the_registry_stays_off_the_request_path_once_a_deployment_is_cached():
    import threading

    from services.gateway.routing import Router
    from tests.common.jobqueue.support import wait_for

    class Registry:
        def __init__(self):
            self.calls = 0
            self.revision = 1
            self.gate = threading.Event()
            self.gate.set()

        def GetDeployment(self, request):
            self.calls += 1
            self.gate.wait(60)
            return registry_pb2.GetDeploymentResponse(
                deployment=common_pb2.Deployment(
                    name=request.name, model_id="m", revision=self.revision
                )
            )

    now = [0.0]
    registry = Registry()
    router = Router(registry, None, None, None, ttl_s=1.0, clock=lambda: now[0])
    assert router.resolve("d").revision == 1 and registry.calls == 1
    now[0] = 0.5
    assert router.resolve("d").revision == 1 and registry.calls == 1  # fresh
    registry.gate.clear()  # the registry hangs from now on
    registry.revision = 2
    now[0] = 1.5
    assert router.resolve("d").revision == 1  # stale, answered at once
    wait_for(lambda: registry.calls == 2)  # refreshed in the background
    assert router.resolve("d").revision == 1 and registry.calls == 2  # one refresh
    registry.gate.set()
    wait_for(lambda: router.resolve("d").revision == 2)
    now[0] = 100.0  # older than max_stale_s: read on the request path
    registry.revision = 3
    assert router.resolve("d").revision == 3
