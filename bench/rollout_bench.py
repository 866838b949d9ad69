"""Progressive delivery: the gateway's canary routing and analysis, measured.

* split: Pearson chi-square of N ArmChooser decisions against a 90/10 split;
* sticky: routing keys keep their arm across a router restart and only move
  into the canary as its weight grows from 10% to 25%;
* router overhead: the gateway's Generate against the inference service's own,
  alternated call by call, on a tiny model with max_new_tokens=1, the three
  services as separate processes as `lorafleet up` runs them; beside them, the
  same call through passthrough_proxy.py (a grpcio hop with no code at all),
  the floor any Python router pays;
* bad canaries: requests a faulty canary serves before its rollback at
  20 req/s, lorafleet's CanaryPolicy against Flagger's scheduler, on the same
  simulated traffic (see rollout_sim.py); ratio = lorafleet / Flagger medians;
* false rollbacks: the share of healthy canaries the policy rolls back.

    python bench/rollout_bench.py --out bench/results/rollout.json [--skip-overhead]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import rollout_sim as sim

from lorafleet.v1 import common_pb2
from services.gateway.arms import Arm, ArmChooser

ROOT = Path(__file__).resolve().parents[1]
STABLE, CANDIDATE = common_pb2.TARGET_ROLE_STABLE, common_pb2.TARGET_ROLE_CANDIDATE
DEPLOYMENT = "rollout-bench"


def two_arms(canary_bps: int) -> list[Arm]:
    """Stable and canary arms, built as tests/gateway/test_routing.py does."""
    return [
        Arm("stable", "m-stable", "", "", 10_000 - canary_bps, STABLE),
        Arm("canary", "m-canary", "", "", canary_bps, CANDIDATE),
    ]


def split_chi2(n: int, seed: int | None) -> dict:
    """Chi-square (1 dof: p = erfc(sqrt(x / 2))) of n keyless decisions at 90/10.

    seed None uses ArmChooser's default, random.SystemRandom, as the gateway does.
    """
    chooser = ArmChooser(random.Random(seed) if seed is not None else None)
    arms = two_arms(1000)
    seen = Counter(chooser.choose(DEPLOYMENT, arms).name for _ in range(n))
    expected = {"stable": n * 0.9, "canary": n * 0.1}
    x = sum((seen[k] - e) ** 2 / e for k, e in expected.items())
    return {
        "split_chi2_p": math.erfc(math.sqrt(x / 2)),
        "split_chi2": x,
        "split_decisions": n,
        "split_counts": dict(seen),
        "split_seed": seed,
        "split_rng": "random.Random(seed)" if seed is not None else "SystemRandom",
    }


def sticky(keys: int) -> dict:
    """Keys' arms at 10%, then at 25% in a new ArmChooser (a restarted router)."""
    names = [f"user-{i}" for i in range(keys)]
    before = {
        k: ArmChooser().choose(DEPLOYMENT, two_arms(1000), routing_key=k) for k in names
    }
    restarted = ArmChooser()
    again = {
        k: restarted.choose(DEPLOYMENT, two_arms(1000), routing_key=k) for k in names
    }
    after = {
        k: restarted.choose(DEPLOYMENT, two_arms(2500), routing_key=k) for k in names
    }
    in_canary = [k for k in names if before[k].name == "canary"]
    in_stable = [k for k in names if before[k].name == "stable"]
    moved = sum(after[k].name == "canary" for k in in_stable)
    return {
        "sticky_consistency": sum(after[k].name == "canary" for k in in_canary)
        / max(len(in_canary), 1),
        "sticky_moved_share": moved / keys,
        "sticky_moved_share_of_stable": moved / max(len(in_stable), 1),
        "sticky_restart_agreement": sum(again[k].name == before[k].name for k in names)
        / keys,
        "sticky_keys": keys,
        "sticky_canary_share_at_10": len(in_canary) / keys,
    }


# --- router overhead: three real processes ----------------------------------------


def tiny_model(out: Path) -> Path:
    """tests/tiny_models.py's 2-layer llama, with a tokenizer from the demo data."""
    sys.path.insert(0, str(ROOT))
    from services.demo.orders import DATASET_PATH
    from tests.tiny_models import build_tiny_model, build_tokenizer

    rows = [json.loads(line) for line in DATASET_PATH.read_text().splitlines()]
    corpus = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in rows]
    build_tokenizer(out / "tokenizer", corpus + ["user assistant system"] * 10)
    return build_tiny_model(out / "model", out / "tokenizer")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    import numpy

    return float(numpy.quantile(values, q))


def time_calls(paths: dict, calls: int, warmup: int) -> dict:
    """Calls each path once per round, rotating which goes first, so load
    that comes and goes hits every path alike; milliseconds per call."""
    names = list(paths)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + calls):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            paths[name]()
            if i >= warmup:
                times[name].append((time.perf_counter() - started) * 1000.0)
    return times


def generate_paths(gateway, inference, proxied, model_id: str) -> dict:
    """The same generation three ways: through the gateway, straight to
    inference, and to inference through the no-code pass-through proxy."""
    from lorafleet.v1 import gateway_pb2, inference_pb2

    params = common_pb2.GenerationParams(prompt="Order for Ana", max_new_tokens=1)
    direct = inference_pb2.InferenceServiceGenerateRequest(
        model_id=model_id, params=params
    )
    return {
        "gateway": lambda: gateway.Generate(
            gateway_pb2.GenerateRequest(deployment=DEPLOYMENT, params=params),
            timeout=60,
        ),
        "direct": lambda: inference.Generate(direct, timeout=60),
        "passthrough": lambda: proxied.Generate(direct, timeout=60),
    }


def router_overhead(calls: int, warmup: int = 100) -> dict:
    """Starts registry, inference and gateway as `lorafleet up` does, registers
    and deploys a tiny model through the gateway, then times both paths."""
    import grpc

    from lorafleet.v1 import (
        gateway_pb2,
        gateway_pb2_grpc,
        inference_pb2_grpc,
        registry_pb2_grpc,
    )
    from services.cli.models import import_model
    from services.common.config import load_config
    from services.local.launcher import LocalSuite, free_port_block, plan_ports

    load = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        work = Path(tmp)
        source = tiny_model(work)
        config = load_config(data_dir=work / "data")
        suite = LocalSuite(
            config=config,
            ports=plan_ports(free_port_block()),
            log_dir=work / "logs",
            names=("registry", "inference", "gateway"),
        )
        channels, proxy = [], None
        try:
            suite.start()
            proxy_port = free_port_block(1)
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "passthrough_proxy.py"),
                    "--port",
                    str(proxy_port),
                    "--upstream",
                    suite.address("inference"),
                ],
                env=suite.env(),
            )
            addresses = [suite.address(n) for n in suite.names]
            addresses.append(f"127.0.0.1:{proxy_port}")
            channels = [grpc.insecure_channel(a) for a in addresses]
            registry = registry_pb2_grpc.RegistryServiceStub(channels[0])
            inference = inference_pb2_grpc.InferenceServiceStub(channels[1])
            gateway = gateway_pb2_grpc.GatewayServiceStub(channels[2])
            proxied = inference_pb2_grpc.InferenceServiceStub(channels[3])
            grpc.channel_ready_future(channels[3]).result(timeout=60)
            model = import_model(
                source, "rollout-bench-tiny", config.staging_dir, registry
            )
            gateway.Deploy(
                gateway_pb2.DeployRequest(
                    deployment=DEPLOYMENT, model_id=model.id, reason="rollout bench"
                ),
                timeout=300,
            )
            gateway_pid = suite.processes["gateway"].pid
            cpu_before = process_cpu_s(gateway_pid)
            paths = generate_paths(gateway, inference, proxied, model.id)
            times = time_calls(paths, calls, warmup)
            cpu_after = process_cpu_s(gateway_pid)
        finally:
            for channel in channels:
                channel.close()
            if proxy is not None:
                proxy.kill()
                proxy.wait()
            suite.stop()
    out = {"calls": calls, "warmup_calls": warmup, "load_average_before": load}
    out["load_average_after"] = list(os.getloadavg())
    for kind, values in times.items():
        out[f"{kind}_p50_ms"] = percentile(values, 0.50)
        out[f"{kind}_p99_ms"] = percentile(values, 0.99)
        out[f"{kind}_mean_ms"] = sum(values) / len(values)
    for hop in ("gateway", "passthrough"):
        prefix = "" if hop == "gateway" else "passthrough_"
        for q in ("p50", "p99"):
            direct = out[f"direct_{q}_ms"]
            out[f"{prefix}overhead_{q}_ms"] = out[f"{hop}_{q}_ms"] - direct
        # Each round's call minus its direct call: less swayed by load that
        # comes and goes than the difference of two separate percentiles.
        paired = [a - d for a, d in zip(times[hop], times["direct"], strict=True)]
        out[f"{prefix}paired_overhead_p50_ms"] = percentile(paired, 0.50)
        out[f"{prefix}paired_overhead_p99_ms"] = percentile(paired, 0.99)
    # The gateway process's CPU time per routed call (its background work
    # included): the router's own cost, which load on the machine barely
    # changes, unlike the latencies above.
    if cpu_before is not None and cpu_after is not None:
        out["gateway_cpu_ms_per_call"] = (
            (cpu_after - cpu_before) * 1000.0 / (warmup + calls)
        )
    return out


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the report ---------------------------------------------------------------------


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
    }


def build_report(args: argparse.Namespace) -> dict:
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):
        started = time.perf_counter()
        result = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - started, 2)
        return result

    report: dict = {"command": shlex.join(["python", *sys.argv]), "machine": machine()}
    report.update(timed("split", split_chi2, args.split_n, args.split_seed))
    report.update(timed("sticky", sticky, args.keys))
    if args.skip_overhead:
        report.update(router_overhead_p99_ms=None, router_overhead_target_met=None)
    else:
        overhead = timed("router_overhead", router_overhead, args.calls)
        report.update(
            router_overhead=overhead,
            router_overhead_p99_ms=overhead["overhead_p99_ms"],
            router_overhead_p50_ms=overhead["overhead_p50_ms"],
            router_overhead_target_met=overhead["overhead_p99_ms"] <= 1.0,
            # The floor: what a Python hop that does nothing costs here.
            passthrough_overhead_p99_ms=overhead["passthrough_overhead_p99_ms"],
            passthrough_overhead_p50_ms=overhead["passthrough_overhead_p50_ms"],
        )
    bad = timed("bad_canaries", sim.bad_canaries, args.seeds)
    report.update(
        canary_bad_requests_lorafleet=bad["lorafleet"],
        canary_bad_requests_flagger=bad["flagger"],
        canary_ratio=bad["ratio"],
        canary_settings=canary_settings(args.seeds),
    )
    healthy = timed("false_rollbacks", sim.false_rollbacks, args.healthy)
    report.update(false_rollback_rate=healthy["rate"], false_rollbacks=healthy)
    # Flagger's absolute limits would fail a canary with HEALTHY's 2% invalid
    # JSON every time; on BASELINE both controllers can be compared.
    report["false_rollbacks_baseline_profile"] = {
        "lorafleet": timed(
            "false_rollbacks_baseline_lorafleet",
            sim.false_rollbacks,
            args.healthy,
            sim.BASELINE,
        ),
        "flagger": timed(
            "false_rollbacks_baseline_flagger",
            sim.false_rollbacks,
            args.healthy,
            sim.BASELINE,
            flagger=True,
        ),
    }
    report["targets_met"] = {
        "split_chi2_p > 0.01": report["split_chi2_p"] > 0.01,
        "sticky_consistency == 1": report["sticky_consistency"] == 1.0,
        "router_overhead_p99_ms <= 1": report["router_overhead_target_met"],
        **{f"canary_ratio[{f}] <= 0.5": r <= 0.5 for f, r in bad["ratio"].items()},
        "false_rollback_rate <= 0.01": healthy["rate"] <= 0.01,
    }
    report["details"] = {"per_seed": bad["details"], "seconds": timings}
    return report


def canary_settings(seeds: int) -> dict:
    """What the simulations ran with, for the reader of the JSON."""
    policy = sim.lorafleet_policy()
    return {
        "seeds": seeds,
        "rate_per_s": sim.RATE_PER_S,
        "horizon_s": sim.HORIZON_S,
        "counted": "requests served by the canary until rollback; a promoted "
        "(missed) faulty canary counts every request until horizon_s",
        "ratio": "lorafleet median / flagger median",
        "stable": vars(sim.BASELINE),
        "faults": sim.FAULTS,
        "healthy": vars(sim.HEALTHY),
        "lorafleet": {
            "steps_bps": policy.steps_bps,
            "step_interval_s": policy.step_interval_s,
            "analysis": vars(policy.analysis),
            "tick_s": 1,
        },
        "flagger": {
            **vars(sim.FlaggerSettings()),
            "failed_checks_reset_on_success": False,
            "rollback_at": "the check that reaches threshold (docs' interval x "
            "threshold; scheduler.go rolls back one interval later)",
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write the JSON report")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per path")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--healthy", type=int, default=300, help="healthy canaries")
    parser.add_argument("--seeds", type=int, default=50, help="runs per fault")
    parser.add_argument("--split-n", type=int, default=100_000)
    parser.add_argument(
        "--split-seed", type=int, default=None, help="default: SystemRandom"
    )
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args(argv)
    report = build_report(args)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    summary = {k: v for k, v in report.items() if k != "details"}
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main()
