"""`lorafleet rollout ...` and `lorafleet deployments ...` against fake servers.

An in-process gRPC server on an ephemeral port runs fake gateway and registry
servicers that return canned protos and record the requests they get.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest

from lorafleet.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.cli import rollouts as rollout_cli
from services.cli.main import main

S = gateway_pb2.RolloutState
ROLE = common_pb2.TargetRole


def _rollout(rid="r-1", state=S.ROLLOUT_STATE_PROGRESSING, **kw) -> gateway_pb2.Rollout:
    fields = dict(
        id=rid,
        deployment="support-bot",
        strategy="canary",
        state=state,
        stable=common_pb2.DeploymentTarget(model_id="m-1"),
        candidate=common_pb2.DeploymentTarget(model_id="m-2", adapter_id="a-2"),
        candidate_weight_bps=2500,
        step=2,
        total_steps=3,
        message="at step 2",
    )
    fields.update(kw)
    return gateway_pb2.Rollout(**fields)


def _event(seq, kind, bps=0, step=0, message="", metrics=None):
    event = gateway_pb2.RolloutEvent(
        sequence=seq,
        kind=kind,
        candidate_weight_bps=bps,
        step=step,
        message=message,
        metrics=metrics or {},
    )
    event.time.FromSeconds(1_700_000_000 + seq)
    return event


ANALYSIS = {
    "candidate_requests": 40,
    "error_rate": 0.1,
    "error_rate.limit": 0.05,
    "error_rate.passed": 0,
    "p95_latency_ratio": 1.2,
    "p95_latency_ratio.limit": 1.5,
    "p95_latency_ratio.passed": 1,
}

ROLLED_BACK = [
    (_event(1, "started", 0, 0, "canary to m-2"), S.ROLLOUT_STATE_PROGRESSING),
    (_event(2, "weight", 500, 1, "moved to 5%"), S.ROLLOUT_STATE_PROGRESSING),
    (_event(3, "analysis", 500, 1, "error rate too high", ANALYSIS), None),
    (
        _event(4, "rolled_back", 0, 1, "error_rate 0.1 > 0.05"),
        S.ROLLOUT_STATE_ROLLED_BACK,
    ),
]
PROMOTED = [
    (_event(1, "started", 0, 0, "canary to m-2"), S.ROLLOUT_STATE_PROGRESSING),
    (_event(2, "weight", 10000, 3, "all traffic"), S.ROLLOUT_STATE_PROGRESSING),
    (_event(3, "promoted", 10000, 3, "all steps passed"), S.ROLLOUT_STATE_PROMOTED),
]


class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self):
        self.requests: list[tuple[str, object]] = []
        self.errors: dict[str, tuple[grpc.StatusCode, str]] = {}
        self.events = {"r-1": ROLLED_BACK, "r-2": PROMOTED}
        self.drop_watch_after: list[int] = []  # UNAVAILABLE after these many events

    def _record(self, name, request, context):
        self.requests.append((name, request))
        if name in self.errors:
            context.abort(*self.errors[name])

    def sent(self, name):
        return [r for n, r in self.requests if n == name]

    def StartRollout(self, request, context):
        self._record("StartRollout", request, context)
        rid = "r-2" if request.deployment == "promotes" else "r-1"
        return gateway_pb2.StartRolloutResponse(
            rollout=_rollout(rid, S.ROLLOUT_STATE_PENDING, step=0, message="accepted")
        )

    def GetRollout(self, request, context):
        self._record("GetRollout", request, context)
        rollout = _rollout(request.rollout_id, forced=True, reason="hotfix")
        rollout.last_analysis.CopyFrom(
            gateway_pb2.AnalysisResult(
                decision="continue",
                candidate_requests=12,
                checks=[
                    gateway_pb2.AnalysisCheck(
                        name="error_rate", value=0.01, threshold=0.05, passed=True
                    )
                ],
            )
        )
        return gateway_pb2.GetRolloutResponse(rollout=rollout)

    def ListRollouts(self, request, context):
        self._record("ListRollouts", request, context)
        return gateway_pb2.ListRolloutsResponse(
            rollouts=[
                _rollout("r-2"),
                _rollout(
                    "r-1",
                    S.ROLLOUT_STATE_ROLLED_BACK,
                    strategy="ab_test",
                    candidate_weight_bps=0,
                    message="no significant difference",
                ),
            ]
        )

    def _control(self, name, request, context, state):
        self._record(name, request, context)
        return _rollout(request.rollout_id, state, message=request.reason)

    def PromoteRollout(self, request, context):
        r = self._control("PromoteRollout", request, context, S.ROLLOUT_STATE_PROMOTED)
        return gateway_pb2.PromoteRolloutResponse(rollout=r)

    def AbortRollout(self, request, context):
        r = self._control("AbortRollout", request, context, S.ROLLOUT_STATE_ROLLED_BACK)
        return gateway_pb2.AbortRolloutResponse(rollout=r)

    def PauseRollout(self, request, context):
        r = self._control("PauseRollout", request, context, S.ROLLOUT_STATE_PAUSED)
        return gateway_pb2.PauseRolloutResponse(rollout=r)

    def ResumeRollout(self, request, context):
        r = self._control(
            "ResumeRollout", request, context, S.ROLLOUT_STATE_PROGRESSING
        )
        return gateway_pb2.ResumeRolloutResponse(rollout=r)

    def WatchRollout(self, request, context):
        self._record("WatchRollout", request, context)
        state = S.ROLLOUT_STATE_PROGRESSING
        sent = 0
        for event, new_state in self.events[request.rollout_id]:
            state = new_state or state
            if event.sequence <= request.after_sequence:
                continue
            if self.drop_watch_after and sent == self.drop_watch_after[0]:
                self.drop_watch_after.pop(0)
                context.abort(grpc.StatusCode.UNAVAILABLE, "gateway restarting")
            sent += 1
            yield gateway_pb2.WatchRolloutResponse(
                event=event,
                rollout=_rollout(
                    request.rollout_id,
                    state,
                    candidate_weight_bps=event.candidate_weight_bps,
                ),
            )

    def ConcludeExperiment(self, request, context):
        self._record("ConcludeExperiment", request, context)
        result = gateway_pb2.ExperimentResult(
            metric="success_rate",
            arms=[
                gateway_pb2.ExperimentArm(
                    arm="a",
                    requests=400,
                    success_rate=0.915,
                    success_rate_low=0.884,
                    success_rate_high=0.938,
                    latency_p50_ms=120,
                    latency_p95_ms=300,
                    mean_output_chars=80,
                ),
                gateway_pb2.ExperimentArm(
                    arm="b",
                    requests=410,
                    success_rate=0.97,
                    success_rate_low=0.948,
                    success_rate_high=0.983,
                    latency_p50_ms=110,
                    latency_p95_ms=280,
                    mean_output_chars=75,
                ),
            ],
            winner="b",
            significant=True,
            p_value=0.003,
            summary="candidate is better: 97.0% vs 91.5% (p = 0.003)",
            confidence=0.95,
        )
        rollout = _rollout(
            request.rollout_id, S.ROLLOUT_STATE_PROMOTED, strategy="ab_test"
        )
        return gateway_pb2.ConcludeExperimentResponse(result=result, rollout=rollout)

    def GetDeploymentMetrics(self, request, context):
        self._record("GetDeploymentMetrics", request, context)
        return gateway_pb2.GetDeploymentMetricsResponse(
            deployment=request.deployment,
            window_s=request.window_s,
            arms=[
                gateway_pb2.ArmMetrics(
                    arm="stable",
                    requests=950,
                    errors={"UNAVAILABLE": 19},
                    latency_p50_ms=101,
                    latency_p95_ms=250,
                    latency_p99_ms=400,
                ),
                gateway_pb2.ArmMetrics(
                    arm="canary", requests=50, latency_p95_ms=260, empty_outputs=2
                ),
            ],
        )


def _deployment(name, revision, *targets, reason="") -> common_pb2.Deployment:
    d = common_pb2.Deployment(
        name=name, revision=revision, reason=reason, targets=list(targets)
    )
    d.update_time.FromSeconds(1_700_000_000)
    return d


CANARY = _deployment(
    "support-bot",
    7,
    common_pb2.DeploymentTarget(
        model_id="m-1", weight_bps=9500, arm="stable", role=ROLE.TARGET_ROLE_STABLE
    ),
    common_pb2.DeploymentTarget(
        model_id="m-2",
        adapter_id="a-2",
        weight_bps=500,
        arm="canary",
        role=ROLE.TARGET_ROLE_CANDIDATE,
    ),
    reason="rollout r-2 step 1",
)
SHADOWED = _deployment(
    "summarizer",
    3,
    common_pb2.DeploymentTarget(
        model_id="m-3", weight_bps=10000, arm="stable", role=ROLE.TARGET_ROLE_STABLE
    ),
    common_pb2.DeploymentTarget(
        model_id="m-4", arm="shadow", role=ROLE.TARGET_ROLE_SHADOW, mirror_bps=1000
    ),
)
LEGACY = common_pb2.Deployment(name="legacy", revision=1, model_id="m-0")


class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self):
        self.requests: list[tuple[str, object]] = []
        self.pages = {"": ([CANARY], "p2"), "p2": ([SHADOWED, LEGACY], "")}

    def ListDeployments(self, request, context):
        self.requests.append(("ListDeployments", request))
        deployments, token = self.pages[request.page_token]
        return registry_pb2.ListDeploymentsResponse(
            deployments=deployments, next_page_token=token
        )

    def GetDeployment(self, request, context):
        self.requests.append(("GetDeployment", request))
        if request.name != CANARY.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no deployment {request.name}")
        return registry_pb2.GetDeploymentResponse(deployment=CANARY)


@pytest.fixture
def fakes(monkeypatch):
    gateway, registry = FakeGateway(), FakeRegistry()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(gateway, server)
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sleeps: list[float] = []
    monkeypatch.setattr(rollout_cli, "_sleep", sleeps.append)
    address = f"127.0.0.1:{port}"

    def run(*argv: str) -> int:
        return main([*argv, "--gateway", address, "--registry", address])

    run.address = address
    yield run, gateway, registry, sleeps
    server.stop(None)


def test_start_sends_the_settings(fakes, capsys):
    run, gateway, _, _ = fakes
    code = run(
        "rollout", "start", "support-bot", "m-2", "--adapter", "a-2",
        "--steps", "500,2500,5000", "--interval", "30", "--min-requests", "50",
        "--max-error-rate", "0.02", "--max-latency-ratio", "1.3",
        "--alias", "prod", "--force", "--reason", "hotfix", "--request-id", "req-1",
    )  # fmt: skip
    assert code == 0
    (request,) = gateway.sent("StartRollout")
    assert (request.deployment, request.model_id, request.adapter_id) == (
        "support-bot",
        "m-2",
        "a-2",
    )
    s = request.settings
    assert s.strategy == ""  # the gateway's default (canary)
    assert list(s.canary.steps_bps) == [500, 2500, 5000]
    assert s.canary.step_interval_s == 30
    assert s.analysis.min_requests == 50
    assert s.analysis.max_error_rate == pytest.approx(0.02)
    assert s.analysis.max_latency_ratio == pytest.approx(1.3)
    assert s.promote_alias == "prod"
    assert (request.force, request.reason, request.request_id) == (
        True,
        "hotfix",
        "req-1",
    )
    out = capsys.readouterr().out
    assert "rollout r-1 PENDING" in out
    assert "lorafleet rollout watch r-1" in out


def test_start_experiment_settings(fakes):
    run, gateway, _, _ = fakes
    assert (
        run(
            "rollout",
            "start",
            "support-bot",
            "m-2",
            "--strategy",
            "ab_test",
            "--split",
            "2000",
            "--duration",
            "600",
            "--sample-size",
            "1000",
            "--manual-decision",
        )  # fmt: skip
        == 0
    )
    assert (
        run(
            "rollout",
            "start",
            "support-bot",
            "m-2",
            "--strategy",
            "shadow",
            "--mirror",
            "1000",
            "--duration",
            "60",
            "--steps",
            "5%,25%",
        )  # fmt: skip
        == 2
    )
    assert (
        run(
            "rollout",
            "start",
            "support-bot",
            "m-2",
            "--strategy",
            "canary",
            "--steps",
            "5%,25%,100%",
        )  # fmt: skip
        == 0
    )
    ab, canary = gateway.sent("StartRollout")
    assert ab.settings.strategy == "ab_test"
    assert ab.settings.ab_test.candidate_weight_bps == 2000
    assert ab.settings.ab_test.duration_s == 600
    assert ab.settings.ab_test.sample_size == 1000
    assert ab.settings.manual_decision
    assert not ab.settings.shadow.duration_s
    assert list(canary.settings.canary.steps_bps) == [500, 2500, 10000]


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--force"], "--force needs --reason"),
        (["--split", "2000"], "--split applies to --strategy ab_test"),
        (["--strategy", "canary", "--mirror", "100"], "--mirror applies"),
    ],
)
def test_start_refuses_bad_options_before_calling(fakes, capsys, extra, complaint):
    run, gateway, _, _ = fakes
    assert run("rollout", "start", "support-bot", "m-2", *extra) == 2
    assert complaint in capsys.readouterr().err
    assert gateway.requests == []


def test_bad_steps_are_a_usage_error(fakes, capsys):
    run, gateway, _, _ = fakes
    with pytest.raises(SystemExit) as exc:
        run("rollout", "start", "d", "m", "--steps", "5,ten")
    assert exc.value.code == 2
    assert gateway.requests == []


def test_status_lists_recent_rollouts(fakes, capsys):
    run, gateway, _, _ = fakes
    assert run("rollout", "status", "--deployment", "support-bot") == 0
    (request,) = gateway.sent("ListRollouts")
    assert request.deployment == "support-bot"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID", "DEPLOYMENT", "STRATEGY", "STATE", "WEIGHT", "STEP", "MESSAGE",
    ]  # fmt: skip
    assert lines[1].split() == [
        "r-2", "support-bot", "canary", "PROGRESSING", "25%", "2/3", "at", "step", "2",
    ]  # fmt: skip
    assert lines[2].split()[:6] == [
        "r-1", "support-bot", "ab_test", "ROLLED_BACK", "0%", "2/3",
    ]  # fmt: skip
    assert lines[2].endswith("no significant difference")


def test_status_of_one_rollout(fakes, capsys):
    run, gateway, _, _ = fakes
    assert run("rollout", "status", "r-7") == 0
    assert gateway.sent("GetRollout")[0].rollout_id == "r-7"
    out = capsys.readouterr().out
    assert "rollout:    r-7" in out
    assert "candidate:  m-2 + a-2" in out
    assert "reason:     forced: hotfix" in out
    assert "last analysis: continue after 12 candidate requests" in out
    assert "error_rate  0.01   0.05   ok" in out


def test_watch_prints_events_and_exits_1_on_rollback(fakes, capsys):
    run, gateway, _, _ = fakes
    assert run("rollout", "watch", "r-1") == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5
    assert out[0].startswith("2023-11-14T22:13:21Z  started")
    assert "5%  step 1/3  moved to 5%" in out[1]
    assert "error rate too high" in out[2]
    assert (
        "[candidate_requests=40 error_rate=0.1 (limit 0.05, FAIL) "
        "p95_latency_ratio=1.2 (limit 1.5, ok)]"
    ) in out[2]
    assert "rolled_back" in out[3]
    assert out[4].startswith("rollout r-1 ROLLED_BACK")
    assert gateway.sent("WatchRollout")[0].after_sequence == 0


def test_watch_exits_0_on_promotion(fakes, capsys):
    run, _, _, _ = fakes
    assert run("rollout", "watch", "r-2") == 0
    out = capsys.readouterr().out
    assert "promoted" in out and "rollout r-2 PROMOTED" in out


def test_start_with_watch_follows_the_rollout(fakes, capsys):
    run, gateway, _, _ = fakes
    assert run("rollout", "start", "promotes", "m-2", "--watch") == 0
    assert gateway.sent("WatchRollout")[0].rollout_id == "r-2"
    assert "rollout r-2 PROMOTED" in capsys.readouterr().out


def test_watch_reattaches_after_the_last_event(fakes, capsys):
    run, gateway, _, sleeps = fakes
    gateway.drop_watch_after = [2, 0]  # 2 events, then UNAVAILABLE twice
    assert run("rollout", "watch", "r-1") == 1
    assert [r.after_sequence for r in gateway.sent("WatchRollout")] == [0, 2, 2]
    assert sleeps == [0.5, 1.0]
    captured = capsys.readouterr()
    kinds = [line.split()[1] for line in captured.out.splitlines()[:-1]]
    assert kinds == ["started", "weight", "analysis", "rolled_back"]
    assert "reconnecting" in captured.err


def test_watch_gives_up_when_the_gateway_stays_down(fakes, capsys):
    run, gateway, _, sleeps = fakes
    gateway.errors["WatchRollout"] = (grpc.StatusCode.UNAVAILABLE, "down")
    assert run("rollout", "watch", "r-1") == 2
    assert len(sleeps) == rollout_cli.WATCH_RECONNECTS
    assert "error: UNAVAILABLE: down" in capsys.readouterr().err


def test_watch_unknown_rollout(fakes, capsys):
    run, gateway, _, sleeps = fakes
    gateway.errors["WatchRollout"] = (grpc.StatusCode.NOT_FOUND, "no rollout r-9")
    assert run("rollout", "watch", "r-9") == 2
    assert capsys.readouterr().err == "error: NOT_FOUND: no rollout r-9\n"
    assert sleeps == []


@pytest.mark.parametrize(
    ("command", "rpc", "state"),
    [
        ("promote", "PromoteRollout", "PROMOTED"),
        ("abort", "AbortRollout", "ROLLED_BACK"),
        ("pause", "PauseRollout", "PAUSED"),
        ("resume", "ResumeRollout", "PROGRESSING"),
    ],
)
def test_controls_send_the_reason(fakes, capsys, command, rpc, state):
    run, gateway, _, _ = fakes
    assert run("rollout", command, "r-1", "--reason", "looks good") == 0
    (request,) = gateway.sent(rpc)
    assert (request.rollout_id, request.reason) == ("r-1", "looks good")
    assert f"rollout r-1 {state}" in capsys.readouterr().out


def test_server_error_exits_2_with_the_message(fakes, capsys):
    run, gateway, _, _ = fakes
    gateway.errors["PromoteRollout"] = (
        grpc.StatusCode.FAILED_PRECONDITION,
        "rollout r-1 has finished (ROLLED_BACK)",
    )
    assert run("rollout", "promote", "r-1") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: FAILED_PRECONDITION: rollout r-1 has finished (ROLLED_BACK)\n"
    )


def test_unreachable_gateway_exits_2(capsys):
    # Port 1 on loopback refuses connections.
    args = ["rollout", "status", "--gateway", "127.0.0.1:1", "--timeout", "5"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: ")


def test_addresses_default_from_the_config(fakes, capsys, tmp_path, monkeypatch):
    run, gateway, _, _ = fakes
    monkeypatch.delenv("LORAFLEET_GATEWAY_ADDRESS", raising=False)
    config = tmp_path / "lf.yaml"
    config.write_text(f"gateway_address: {run.address}\n")
    assert main(["rollout", "status", "r-3", "--config", str(config)]) == 0
    assert gateway.sent("GetRollout")[0].rollout_id == "r-3"


def test_conclude_prints_arms_and_the_winner(fakes, capsys):
    run, gateway, _, _ = fakes
    assert run("rollout", "conclude", "r-1") == 0
    assert gateway.sent("ConcludeExperiment")[0].rollout_id == "r-1"
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["ARM", "REQUESTS", "SUCCESS_RATE", "95%"]
    assert out[1].split() == [
        "a",
        "400",
        "91.5%",
        "[88.4%,",
        "93.8%]",
        "120",
        "300",
        "80",
    ]
    assert out[2].split()[:5] == ["b", "410", "97.0%", "[94.8%,", "98.3%]"]
    assert out[3] == "winner: b (p = 0.003)"
    assert out[4] == "candidate is better: 97.0% vs 91.5% (p = 0.003)"
    assert out[5].startswith("rollout r-1 PROMOTED")


def test_deployments_list_reads_every_page(fakes, capsys):
    run, _, registry, _ = fakes
    assert run("deployments", "list") == 0
    tokens = [r.page_token for n, r in registry.requests if n == "ListDeployments"]
    assert tokens == ["", "p2"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME", "REV", "ARM", "ROLE", "WEIGHT", "MODEL", "ADAPTER", "UPDATED", "REASON",
    ]  # fmt: skip
    assert lines[1].split() == [
        "support-bot", "7", "stable", "STABLE", "95%", "m-1", "-",
        "2023-11-14T22:13:20Z", "rollout", "r-2", "step", "1",
    ]  # fmt: skip
    assert lines[2].split() == ["canary", "CANDIDATE", "5%", "m-2", "a-2"]
    assert lines[3].split()[:6] == [
        "summarizer",
        "3",
        "stable",
        "STABLE",
        "100%",
        "m-3",
    ]
    assert lines[4].split() == ["shadow", "SHADOW", "mirror", "10%", "m-4", "-"]
    assert lines[5].split()[:6] == ["legacy", "1", "stable", "STABLE", "100%", "m-0"]


def test_deployments_show(fakes, capsys):
    run, gateway, _, _ = fakes
    assert run("deployments", "show", "support-bot") == 0
    (metrics,) = gateway.sent("GetDeploymentMetrics")
    assert (metrics.deployment, metrics.window_s) == ("support-bot", 300)
    assert gateway.sent("ListRollouts")[0].deployment == "support-bot"
    out = capsys.readouterr().out
    assert "deployment support-bot  revision 7" in out
    lines = out.splitlines()
    assert any(line.split() == ["canary", "CANDIDATE", "5%", "m-2", "+", "a-2", "-"]
               for line in lines)  # fmt: skip
    assert "last 300 s:" in out
    assert any(line.split()[:6] == ["stable", "950", "19", "(2.0%)", "101", "250"]
               for line in lines)  # fmt: skip
    assert "rollout r-2 PROGRESSING: support-bot canary" in out
    assert "lorafleet rollout watch r-2" in out


def test_deployments_show_without_metrics_still_shows_the_arms(fakes, capsys):
    run, gateway, _, _ = fakes
    gateway.errors["GetDeploymentMetrics"] = (grpc.StatusCode.UNAVAILABLE, "down")
    assert run("deployments", "show", "support-bot") == 2
    captured = capsys.readouterr()
    assert "stable  STABLE" in captured.out
    assert "rollout r-2 PROGRESSING" in captured.out
    assert captured.err == "error: UNAVAILABLE: down\n"


def test_deployments_show_unknown(fakes, capsys):
    run, gateway, _, _ = fakes
    assert run("deployments", "show", "nope") == 2
    assert capsys.readouterr().err == "error: NOT_FOUND: no deployment nope\n"
    assert gateway.requests == []


def test_common_options_after_the_command():
    from services.cli.main import build_parser

    args = build_parser().parse_args(
        ["rollout", "watch", "r-1", "--data-dir", "/d", "--config", "c.yaml"]
    )
    assert (args.data_dir, args.config, args.gateway) == ("/d", "c.yaml", None)
    args = build_parser().parse_args(["deployments", "list", "--data-dir", "/x"])
    assert args.data_dir == "/x"


def test_the_commands_start_without_torch():
    """`lorafleet rollout status` answers in a moment: the command's modules
    leave torch and transformers unimported."""
    code = (
        "import sys, services.cli.main\n"
        "heavy = ('torch', 'transformers', 'peft')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
