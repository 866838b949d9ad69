"""Multi-adapter serving: lorafleet's inference service against the obvious server.

SmolLM2-135M-Instruct with 4 random LoRA adapters (rank 16, every linear
layer). The same requests (prompts from the demo dataset, adapters drawn
Zipf-style, 32 greedy new tokens) go from 8 concurrent gRPC clients to

* lorafleet: the inference service as `lorafleet up` runs it (its own
  process, artifacts in a registry process), continuous mixed-adapter
  batching;
* naive: naive_lora_server.py, one request at a time with `set_adapter`
  (over the same gRPC framing).

Reported: tokens/s of each and their ratio, p50/p99 latency, whether every
request's text is the same on both (greedy), swap_ms (1-token requests
cycling over 1, 8 and 32 resident adapters, minus the same on one adapter),
and the health check's p99 while 64 requests wait.

    python bench/serve_bench.py --out bench/results/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from smollm2 import CACHE, model_dir

ROOT = Path(__file__).resolve().parents[1]


def make_adapters(base: Path, count: int, out: Path) -> list[Path]:
    """`count` rank-16 adapters on every linear layer, random and small (so
    each changes the text, none wrecks it), written as PEFT saves them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    paths = [out / f"adapter-{i:02d}" for i in range(count)]
    if all((p / "adapter_model.safetensors").is_file() for p in paths):
        return paths
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
    peft = get_peft_model(model, config)
    template = out / "template"
    peft.save_pretrained(template)
    from safetensors.torch import load_file

    shapes = load_file(template / "adapter_model.safetensors")
    for i, path in enumerate(paths):
        gen = torch.Generator().manual_seed(1000 + i)
        weights = {
            k: torch.randn(v.shape, generator=gen) * (0.02 if "lora_B" in k else 0.05)
            for k, v in shapes.items()
        }
        path.mkdir(parents=True, exist_ok=True)
        save_file(weights, path / "adapter_model.safetensors")
        (path / "adapter_config.json").write_text(
            (template / "adapter_config.json").read_text()
        )
    return paths


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    import numpy

    return float(numpy.quantile(values, q))


def workload(n: int, adapters: int, seed: int) -> list[tuple[str, int]]:
    """(prompt, adapter index) pairs; adapter i drawn with weight 1/(i+1)."""
    from services.demo.orders import DATASET_PATH

    rows = [json.loads(line) for line in DATASET_PATH.read_text().splitlines()]
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(adapters)]
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        prompt = (row["instruction"] + "\n" + row["input"]).strip()
        out.append((prompt, rng.choices(range(adapters), weights)[0]))
    return out


def drive(stub, requests, model_id: str, adapter_ids, clients: int, new: int):
    """Sends every request from `clients` threads; per request: (text,
    tokens, latency ms); and the wall time of the whole run."""
    from lorafleet.v1 import common_pb2, inference_pb2

    results: list = [None] * len(requests)

    def one(i: int) -> None:
        prompt, adapter = requests[i]
        started = time.perf_counter()
        out = stub.Generate(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=model_id,
                adapter_id=adapter_ids[adapter],
                params=common_pb2.GenerationParams(prompt=prompt, max_new_tokens=new),
            ),
            timeout=3600,
        ).output
        results[i] = (
            out.text,
            out.completion_tokens,
            (time.perf_counter() - started) * 1000.0,
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(requests))))
    return results, time.perf_counter() - started


def summary(results, wall_s: float) -> dict:
    tokens = sum(r[1] for r in results)
    latencies = [r[2] for r in results]
    return {
        "tokens": tokens,
        "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


def register_adapters(registry, base, paths: list[Path]) -> list[str]:
    from lorafleet.v1 import common_pb2, registry_pb2
    from services.common.convert import struct

    ids = []
    for path in paths:
        ids.append(
            registry.RegisterArtifact(
                registry_pb2.RegisterArtifactRequest(
                    kind=common_pb2.ARTIFACT_KIND_ADAPTER,
                    name=f"serve-bench-{path.name}",
                    source_path=str(path),
                    metadata=struct(
                        {"base_model_id": base.id, "base_model_digest": base.digest}
                    ),
                ),
                timeout=600,
            ).artifact.id
        )
    return ids


def swap_ms(stub, model_id: str, adapter_ids: list[str], calls: int) -> dict:
    """Per resident count: mean latency of 1-token requests cycling over the
    resident adapters minus the mean on one adapter (after loading all and
    serving each once, so the prefix cache favours neither)."""
    from lorafleet.v1 import common_pb2, inference_pb2

    def timed(adapter: str) -> float:
        started = time.perf_counter()
        stub.Generate(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=model_id,
                adapter_id=adapter,
                params=common_pb2.GenerationParams(prompt="Hello", max_new_tokens=1),
            ),
            timeout=600,
        )
        return (time.perf_counter() - started) * 1000.0

    out = {}
    for resident in (1, 8, 32):
        for adapter in adapter_ids[:resident]:
            stub.LoadModel(
                inference_pb2.LoadModelRequest(model_id=model_id, adapter_id=adapter),
                timeout=600,
            )
        for adapter in adapter_ids[:resident]:  # warm: its prompt prefix kept
            timed(adapter)
        same, cycling = [], []
        for i in range(calls):  # interleaved, so load drifts hit both alike
            same.append(timed(adapter_ids[0]))
            cycling.append(timed(adapter_ids[(i + 1) % resident]))
        out[str(resident)] = sum(cycling) / calls - sum(same) / calls
    return out


def health_under_load(address: str, stub, model_id: str, adapter_ids, probes: int):
    """Health check latency while 64 requests wait in the inference queue."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from lorafleet.v1 import common_pb2, inference_pb2

    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    pending = [
        stub.Generate.future(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=model_id,
                adapter_id=adapter_ids[i % len(adapter_ids)],
                params=common_pb2.GenerationParams(
                    prompt=f"Order {i} for Ana", max_new_tokens=32
                ),
            ),
            timeout=3600,
        )
        for i in range(64)
    ]
    latencies = []
    for _ in range(probes):
        started = time.perf_counter()
        health.Check(health_pb2.HealthCheckRequest(), timeout=60)
        latencies.append((time.perf_counter() - started) * 1000.0)
        time.sleep(0.05)
    outcomes = [f.exception() for f in pending]
    return {
        "health_p50_ms_under_load": percentile(latencies, 0.5),
        "health_p99_ms_under_load": percentile(latencies, 0.99),
        "health_probes": probes,
        "load_requests_ok": sum(1 for e in outcomes if e is None),
    }


def run_lorafleet(args, base_dir: Path, adapters: list[Path], requests, work: Path):
    import grpc

    from lorafleet.v1 import inference_pb2, inference_pb2_grpc, registry_pb2_grpc
    from services.cli.models import import_model
    from services.common.config import load_config
    from services.local.launcher import LocalSuite, free_port_block, plan_ports

    config = load_config(
        data_dir=work / "data",
        env={
            "LORAFLEET_INFERENCE_THREADS": str(args.threads),
            # The adapters are registered from the bench's cache.
            "LORAFLEET_ALLOWED_ROOTS": str(CACHE),
        },
    )
    suite = LocalSuite(
        config=config,
        ports=plan_ports(free_port_block()),
        log_dir=work / "logs",
        names=("registry", "inference"),
    )
    channels = []
    try:
        suite.start()
        channels = [grpc.insecure_channel(suite.address(n)) for n in suite.names]
        registry = registry_pb2_grpc.RegistryServiceStub(channels[0])
        stub = inference_pb2_grpc.InferenceServiceStub(channels[1])
        base = import_model(base_dir, "serve-bench-base", config.staging_dir, registry)
        ids = register_adapters(registry, base, adapters)
        for adapter in ids[: args.adapters]:
            stub.LoadModel(
                inference_pb2.LoadModelRequest(model_id=base.id, adapter_id=adapter),
                timeout=600,
            )
        workload_ids = ids[: args.adapters]
        drive(stub, requests[:8], base.id, workload_ids, args.clients, 4)  # warm-up
        results, wall = drive(
            stub, requests, base.id, workload_ids, args.clients, args.new_tokens
        )
        [model] = stub.ListLoadedModels(
            inference_pb2.ListLoadedModelsRequest(), timeout=60
        ).models
        out = summary(results, wall) | {"mean_batch_rows": model.mean_batch_rows}
        out["swap_ms"] = swap_ms(stub, base.id, ids, args.swap_calls)
        out |= health_under_load(
            suite.address("inference"), stub, base.id, workload_ids, args.probes
        )
        return out, results
    finally:
        for channel in channels:
            channel.close()
        suite.stop()


def run_naive(args, base_dir: Path, adapters: list[Path], requests):
    import grpc

    from lorafleet.v1 import inference_pb2_grpc
    from services.local.launcher import free_port_block

    port = free_port_block(1)
    used = adapters[: args.adapters]
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "naive_lora_server.py"),
            "--port",
            str(port),
            "--model",
            str(base_dir),
            "--adapters",
            ",".join(str(p) for p in used),
            "--threads",
            str(args.threads),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        names = [p.name for p in used]
        drive(stub, requests[:8], "base", names, args.clients, 4)  # warm-up
        results, wall = drive(
            stub, requests, "base", names, args.clients, args.new_tokens
        )
        return summary(results, wall), results
    finally:
        channel.close()
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both")
    parser.add_argument("--swap-calls", type=int, default=10)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    base_dir = model_dir()
    adapters = make_adapters(base_dir, 32, CACHE / "serve-adapters")
    requests = workload(args.requests, args.adapters, args.seed)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        lorafleet, ours = run_lorafleet(args, base_dir, adapters, requests, Path(tmp))
    naive, theirs = run_naive(args, base_dir, adapters, requests)
    identical = [a[0] == b[0] for a, b in zip(ours, theirs, strict=True)]
    report = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_end": list(os.getloadavg()),
        },
        "settings": vars(args) | {"out": str(args.out)},
        "throughput_ratio": lorafleet["tokens_per_s"] / naive["tokens_per_s"],
        "outputs_identical": all(identical),
        "outputs_identical_count": f"{sum(identical)}/{len(identical)}",
        "lorafleet": lorafleet,
        "naive": naive,
        "swap_ms": lorafleet["swap_ms"],
        "health_p99_ms_under_load": lorafleet["health_p99_ms_under_load"],
    }
    report["targets_met"] = {
        "throughput_ratio >= 3": report["throughput_ratio"] >= 3,
        "outputs_identical": report["outputs_identical"],
        "health_p99_ms_under_load < 100": report["health_p99_ms_under_load"] < 100,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
