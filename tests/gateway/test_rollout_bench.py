"""bench/rollout_bench.py's fast parts run, small: the report has its keys and
sane values (the router-overhead part, which starts processes, is skipped)."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import rollout_bench

        yield rollout_bench
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("rollout-bench") / "report.json"
    bench.main(
        [
            "--out",
            str(out),
            "--skip-overhead",
            "--healthy",
            "20",
            "--seeds",
            "3",
            "--split-n",
            "20000",
            "--split-seed",
            "7",
            "--keys",
            "2000",
        ]
    )
    return json.loads(out.read_text())


def test_split_and_sticky_routing(report):
    assert report["split_seed"] == 7 and report["split_decisions"] == 20_000
    assert 0.0 <= report["split_chi2_p"] <= 1.0
    assert report["split_chi2_p"] > 0.001  # seeded: the same value every run
    assert report["sticky_consistency"] == 1.0
    assert report["sticky_restart_agreement"] == 1.0
    assert 0.10 < report["sticky_moved_share"] < 0.20


def test_canary_counts_and_false_rollbacks(report):
    assert report["router_overhead_p99_ms"] is None  # skipped
    faults = {"errors", "latency", "invalid_json"}
    for side in ("lorafleet", "flagger"):
        counts = report[f"canary_bad_requests_{side}"]
        assert set(counts) == faults
        for fault in faults:
            assert counts[fault]["median"] >= 0 and counts[fault]["mean"] >= 0
            assert sum(counts[fault]["ends"].values()) == 3
    assert set(report["canary_ratio"]) == faults
    # Flagger needs at least one failed check per interval x threshold.
    for fault in faults:
        assert report["canary_bad_requests_flagger"][fault]["median"] > 100
        assert report["canary_ratio"][fault] >= 0
    assert 0.0 <= report["false_rollback_rate"] <= 1.0
    assert report["false_rollbacks"]["runs"] == 20
    assert set(report["targets_met"]) >= {
        "split_chi2_p > 0.01",
        "sticky_consistency == 1",
        "false_rollback_rate <= 0.01",
    }
    assert report["command"] and report["machine"]["cpu_count"] >= 1


def test_simulated_faulty_canary_is_rolled_back_by_both(bench):
    sim = bench.sim
    broken = replace(sim.BASELINE, error_p=0.5)
    assert sim.run_lorafleet(broken, random.Random(1)).end == "rollback"
    assert sim.run_flagger(broken, random.Random(1)).end == "rollback"


def test_time_calls_rotates_which_path_goes_first(bench):
    order: list[str] = []
    paths = {name: (lambda n=name: order.append(n)) for name in ("a", "b", "c")}
    times = bench.time_calls(paths, calls=3, warmup=1)
    assert order[:6] == ["a", "b", "c", "b", "c", "a"]
    assert {name: len(values) for name, values in times.items()} == {
        "a": 3,
        "b": 3,
        "c": 3,
    }


def test_the_passthrough_proxy_forwards_bytes_and_relays_errors():
    """The overhead floor is only a floor if the proxy really forwards."""
    from concurrent import futures

    import grpc

    sys.path.insert(0, str(BENCH))
    try:
        from passthrough_proxy import PassThrough
    finally:
        sys.path.remove(str(BENCH))

    def echo(request: bytes, context) -> bytes:
        if request == b"missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return request[::-1]

    upstream = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    upstream.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "probe.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    up_port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    to_upstream = grpc.insecure_channel(f"127.0.0.1:{up_port}")
    proxy = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    proxy.add_generic_rpc_handlers((PassThrough(to_upstream, 60.0),))
    proxy_port = proxy.add_insecure_port("127.0.0.1:0")
    proxy.start()
    client = grpc.insecure_channel(f"127.0.0.1:{proxy_port}")
    try:
        call = client.unary_unary("/probe.Echo/Call")
        assert call(b"abc", timeout=60) == b"cba"
        with pytest.raises(grpc.RpcError) as failed:
            call(b"missing", timeout=60)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert failed.value.details() == "no such thing"
    finally:
        client.close()
        proxy.stop(0)
        to_upstream.close()
        upstream.stop(0)
