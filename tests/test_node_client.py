"""examples/node: a client generated from protos/ with @grpc/grpc-js and
@grpc/proto-loader runs a workflow against `lorafleet up` and decodes the
google.rpc.BadRequest of a refused call."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

from services.demo.orders import DATASET_PATH
from services.local.launcher import free_port_block
from tests.test_local_suite import Output, cli_env, run_cli, start_up

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "node"


def _node_modules() -> None:
    """`make setup` installs them; `npm ci` here when pytest runs alone."""
    assert shutil.which("node") and shutil.which("npm"), "Node.js and npm are needed"
    if not (EXAMPLE / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=EXAMPLE,
            check=True,
            timeout=600,
        )


def test_the_node_client_runs_a_workflow_and_decodes_bad_request(
    tmp_path, tiny_model_dir
):
    _node_modules()
    data, base = tmp_path / "data", free_port_block()
    env = cli_env(tmp_path / "state")
    up = start_up(data, env, base)
    out = Output(up.stdout)
    try:
        out.wait_for("all services SERVING", timeout_s=400)
        imported = run_cli(
            ["models", "import", str(tiny_model_dir), "--name", "tiny-node"],
            tmp_path,
            env,
        )
        assert imported.returncode == 0, imported.stderr
        dataset = data / "datasets" / "orders.jsonl"
        dataset.parent.mkdir(parents=True)
        shutil.copy(DATASET_PATH, dataset)
        ran = subprocess.run(
            ["node", "client.js", "--gateway", f"127.0.0.1:{base}"]
            + ["--base-model", "tiny-node", "--dataset-path", str(dataset)]
            + ["--name", "node-orders"],
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            up.kill()
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert summary["health"] == "SERVING"  # enums by name
    workflow = summary["workflow"]
    assert workflow["state"] == "JOB_STATE_SUCCEEDED"
    assert workflow["deployment"] == "node-orders" and workflow["events"] > 3
    assert isinstance(workflow["revision"], str)  # int64 as a string, exact
    assert summary["generated"]["model_id"] == workflow["model_id"]
    refused = summary["refused"]
    assert refused["code"] == "INVALID_ARGUMENT"
    details = refused["details"]
    (bad_request,) = [d for d in details if d["type"] == "google.rpc.BadRequest"]
    fields = [v["field"] for v in bad_request["field_violations"]]
    assert fields == ["train_config.learning_rate"], refused
