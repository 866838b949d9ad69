"""AppendDataset: incremental dataset versions over real gRPC, SQLite and Postgres."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import grpc
import pytest

from lorafleet.client import Client
from lorafleet.v1 import common_pb2, registry_pb2, trainer_pb2
from services.cli.main import main as cli_main

DATASET = common_pb2.ARTIFACT_KIND_DATASET
BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _text_rows(start: int, stop: int) -> list[dict]:
    return [{"text": f"row {i}"} for i in range(start, stop)]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value


def _append(stub, dataset_id: str, **fields):
    return stub.AppendDataset(
        registry_pb2.AppendDatasetRequest(dataset_id=dataset_id, **fields)
    )


def _count(stub) -> int:
    return len(stub.ListArtifacts(registry_pb2.ListArtifactsRequest()).artifacts)


def _upload(stub, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    stub.UploadBlob(
        iter(
            [
                registry_pb2.UploadBlobRequest(
                    sha256=sha, size_bytes=len(data), data=data
                )
            ]
        )
    )
    return sha


@pytest.fixture
def incoming(data_dir: Path) -> Path:
    return data_dir / "incoming"


@pytest.fixture
def base_dataset(register, incoming):
    """chats:1, three text rows in train.jsonl."""
    path = _write(incoming / "v1" / "train.jsonl", _jsonl(_text_rows(0, 3)))
    return register(DATASET, "chats", path).artifact


def test_append_from_path_is_a_content_hashed_new_version(
    stub, register, base_dataset, incoming, digest_of
):
    old = (Path(base_dataset.local_path) / "train.jsonl").read_bytes()
    new_rows = _jsonl(_text_rows(3, 5))
    src = _write(incoming / "more.jsonl", new_rows)

    r = _append(stub, base_dataset.id, source_path=str(src), tags={"round": "2"})

    a = r.artifact
    assert not r.existed
    assert (a.name, a.version, a.kind) == ("chats", 2, DATASET)
    assert (r.previous_row_count, r.appended_rows, r.row_count) == (3, 2, 5)
    assert r.dropped_duplicates == 0
    stored = (Path(a.local_path) / "train.jsonl").read_bytes()
    assert stored == old + new_rows
    assert a.digest != base_dataset.digest
    # The same bytes registered directly hash to the same digest.
    direct = _write(incoming / "direct" / "train.jsonl", old + new_rows)
    assert a.digest == digest_of(direct)
    again = register(DATASET, "chats-direct", direct).artifact
    assert again.digest == a.digest
    assert a.metadata["rows"] == 5 and a.metadata["task_type"] == "text"
    assert a.metadata["schema"] == {"text": ["string"]}
    assert a.metadata["appended_rows"] == 2
    assert a.metadata["previous_row_count"] == 3
    assert a.metadata["dropped_duplicates"] == 0
    assert dict(a.tags) == {"round": "2"}
    lineage = stub.GetLineage(registry_pb2.GetLineageRequest(id=a.id))
    assert [(e.parent_id, e.child_id, e.relation) for e in lineage.edges] == [
        (base_dataset.id, a.id, "appended_from")
    ]
    events = stub.ListAuditEvents(
        registry_pb2.ListAuditEventsRequest(action="dataset.append")
    ).events
    assert [e.target for e in events] == [a.id]
    assert events[0].after["appended_from"] == base_dataset.id
    assert events[0].after["appended_rows"] == 2

    # A retried append returns the version it made instead of minting another.
    retry = _append(stub, base_dataset.id, source_path=str(src))
    assert retry.existed and retry.artifact.id == a.id
    # Appending to the new version chains the lineage.
    third = _append(stub, "chats", rows=_jsonl(_text_rows(5, 6))).artifact
    assert third.version == 3 and third.metadata["previous_row_count"] == 5
    lineage = stub.GetLineage(registry_pb2.GetLineageRequest(id=third.id))
    assert {(e.parent_id, e.child_id) for e in lineage.edges} == {
        (base_dataset.id, a.id),
        (a.id, third.id),
    }


def test_append_from_blob_adds_the_missing_final_newline(
    stub, register, incoming, digest_of
):
    old = _jsonl(_text_rows(0, 2)).rstrip(b"\n")  # no newline after the last row
    base = register(DATASET, "raw", _write(incoming / "raw.jsonl", old)).artifact
    new_rows = b'{"text": "blob row"}'  # no final newline either
    sha = _upload(stub, new_rows)

    r = _append(stub, base.id, blob_sha256=sha)

    stored = (Path(r.artifact.local_path) / "raw.jsonl").read_bytes()
    assert stored == old + b"\n" + new_rows + b"\n"
    expected = _write(incoming / "expected" / "raw.jsonl", stored)
    assert r.artifact.digest == digest_of(expected)
    assert (r.previous_row_count, r.appended_rows, r.row_count) == (2, 1, 3)


def test_inline_rows_with_deduplication(stub, base_dataset):
    rows = (
        b'{"text": "row 1"}\n'  # equals an existing row
        b'{"text":"row 9"}\n'
        b"\n"  # blank lines are skipped
        b'{ "text" : "row 9" }\n'  # equals the previous new row as JSON
        b'{"text": "row 10"}\n'
    )
    r = _append(stub, base_dataset.id, rows=rows, deduplicate=True)

    assert (r.appended_rows, r.dropped_duplicates, r.row_count) == (2, 2, 5)
    assert r.artifact.metadata["dropped_duplicates"] == 2
    tail = (Path(r.artifact.local_path) / "train.jsonl").read_bytes().splitlines()[3:]
    assert tail == [b'{"text":"row 9"}', b'{"text": "row 10"}']
    # Without deduplicate the same rows are all kept.
    kept = _append(stub, base_dataset.id, rows=rows)
    assert (kept.appended_rows, kept.dropped_duplicates, kept.row_count) == (4, 0, 7)

    # Only duplicates: nothing new is recorded and the given version comes back.
    before = _count(stub)
    same = _append(stub, base_dataset.id, rows=b'{"text": "row 0"}\n', deduplicate=True)
    assert same.existed and same.artifact.id == base_dataset.id
    assert (same.appended_rows, same.dropped_duplicates) == (0, 1)
    assert _count(stub) == before


def test_explicit_versions(stub, base_dataset):
    r = _append(stub, base_dataset.id, rows=_jsonl(_text_rows(3, 4)), version=7)
    assert r.artifact.version == 7
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(
            dataset_id=base_dataset.id, rows=_jsonl(_text_rows(4, 5)), version=7
        ),
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "chats:7 already exists" in err.details()
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(
            dataset_id=base_dataset.id, rows=_jsonl(_text_rows(4, 5)), version=-1
        ),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            b'{"text": "ok"}\n{"text": "ok", "label": 1}\n',
            "line 2 does not fit dataset chats:1 (text rows): unexpected key(s) "
            "['label']; keys expected ['text'], found ['label', 'text']",
        ),
        (
            b'\n{"text": 5}\n',
            "line 2 does not fit dataset chats:1 (text rows): key 'text' holds a "
            "number, where the dataset's rows hold string; keys expected ['text'], "
            "found ['text']",
        ),
    ],
)
def test_rows_that_change_the_schema_are_refused(stub, base_dataset, rows, message):
    before = _count(stub)
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(dataset_id=base_dataset.id, rows=rows),
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert message in err.details()
    assert _count(stub) == before


def test_rows_of_another_task_type_are_refused(stub, register, incoming):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    base = register(
        DATASET, "sentiment", _write(incoming / "cls.jsonl", _jsonl(rows))
    ).artifact
    assert base.metadata["task_type"] == "classification"
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(
            dataset_id=base.id, rows=_jsonl([{"text": "no label"}])
        ),
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "line 1" in err.details()
    assert "a text row, not a classification row" in err.details()
    assert "keys expected ['label', 'text'], found ['text']" in err.details()
    # Key order does not make a row new.
    r = _append(
        stub, base.id, rows=b'{"label": "neg", "text": "bad"}\n', deduplicate=True
    )
    assert r.existed and (r.appended_rows, r.dropped_duplicates) == (0, 1)


@pytest.mark.parametrize(
    "rows, words",
    [
        (b'{"text": "ok"}\n{"text": oops}\n', ["rows line 2", "not valid JSON"]),
        (b'{"text": "ok"}\n\n["text"]\n', ["rows line 3", "JSON array, not an object"]),
        (b"\n  \n", ["rows holds no rows"]),
    ],
)
def test_malformed_or_empty_rows_are_invalid(stub, base_dataset, rows, words):
    before = _count(stub)
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(dataset_id=base_dataset.id, rows=rows),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in err.details()
    assert _count(stub) == before


def test_sources_are_checked(stub, base_dataset, incoming, tmp_path):
    src = _write(incoming / "more.jsonl", _jsonl(_text_rows(3, 4)))
    outside = _write(tmp_path / "outside.jsonl", _jsonl(_text_rows(3, 4)))
    cases = [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "exactly one of source_path"),
        (
            {"source_path": str(src), "rows": b'{"text": "x"}\n'},
            grpc.StatusCode.INVALID_ARGUMENT,
            "got source_path and rows",
        ),
        (
            {"source_path": str(outside)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "outside the allowed roots",
        ),
        (
            {"source_path": str(incoming / "missing.jsonl")},
            grpc.StatusCode.NOT_FOUND,
            "does not exist",
        ),
        (
            {"blob_sha256": "ab" * 32},
            grpc.StatusCode.FAILED_PRECONDITION,
            "upload it with UploadBlob first",
        ),
        ({"blob_sha256": "xyz"}, grpc.StatusCode.INVALID_ARGUMENT, "blob_sha256"),
    ]
    before = _count(stub)
    for fields, code, words in cases:
        err = _error(
            stub.AppendDataset,
            registry_pb2.AppendDatasetRequest(dataset_id=base_dataset.id, **fields),
        )
        assert (err.code(), words in err.details()) == (code, True), err.details()
    assert _count(stub) == before


def test_unknown_id_and_non_datasets(stub, register, sources):
    model = register(BASE_MODEL, "smol", sources.model()).artifact
    rows = _jsonl(_text_rows(0, 1))
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(dataset_id="no-such-dataset", rows=rows),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "dataset_id 'no-such-dataset'" in err.details()
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(dataset_id=model.id, rows=rows),
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is a BASE_MODEL, not a DATASET" in err.details()
    assert _count(stub) == 1
    actions = [
        e.action
        for e in stub.ListAuditEvents(registry_pb2.ListAuditEventsRequest()).events
    ]
    assert "dataset.append" not in actions


def test_corrupt_stored_dataset_is_data_loss(stub, base_dataset, data_dir):
    sha = base_dataset.files[0].sha256
    blob = data_dir / "store" / "objects" / "sha256" / sha[:2] / sha
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes().replace(b"row 1", b"row X"))
    err = _error(
        stub.AppendDataset,
        registry_pb2.AppendDatasetRequest(
            dataset_id=base_dataset.id, rows=_jsonl(_text_rows(3, 4))
        ),
    )
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert sha in err.details()
    assert _count(stub) == 1


def test_client_and_cli_append(server, stub, base_dataset, tmp_path, capsys):
    with Client(registry=server.address) as client:
        r = client.append_dataset(
            base_dataset.id, rows=[{"text": "sdk row"}], tags={"by": "sdk"}
        )
        assert (r.artifact.version, r.row_count) == (2, 4)
        # A local file outside the registry's roots travels as an uploaded blob.
        local = _write(tmp_path / "local.jsonl", _jsonl([{"text": "row 0"}]))
        again = client.append_dataset(r.artifact.id, file=local, deduplicate=True)
        assert again.existed and again.dropped_duplicates == 1

    more = _write(
        tmp_path / "cli.jsonl", _jsonl([{"text": "sdk row"}, {"text": "cli row"}])
    )
    code = cli_main(
        ["datasets", "append", "chats", str(more), "--dedup", "--tag", "by=cli"]
        + ["--registry", server.address]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "chats:3" in out and "new version" in out
    assert "rows 4 + 1 appended = 5 (1 duplicates dropped)" in out
    latest = stub.GetArtifact(registry_pb2.GetArtifactRequest(id="chats:3")).artifact
    assert dict(latest.tags) == {"by": "cli"}

    bad = _write(tmp_path / "bad.jsonl", b'{"text": "x", "extra": 1}\n')
    code = cli_main(
        ["datasets", "append", "chats", str(bad), "--registry", server.address]
    )
    assert code == 2  # a remote error: one line, exit 2
    assert capsys.readouterr().err.startswith("error: FAILED_PRECONDITION: ")


def test_trainer_sees_the_appended_rows(suite, base_model):
    from tests.trainer.helpers import chat_row, register_dataset

    dataset = register_dataset(
        suite, "append-report", [chat_row(f"q{i}", f"a{i}") for i in range(4)]
    )
    registry = suite.stub("registry")
    appended = registry.AppendDataset(
        registry_pb2.AppendDatasetRequest(
            dataset_id=dataset.id,
            rows=_jsonl([chat_row(f"q{i}", f"a{i}") for i in range(4, 10)]),
        ),
        timeout=30,
    ).artifact
    report = (
        suite.stub("trainer")
        .ValidateDataset(
            trainer_pb2.ValidateDatasetRequest(
                dataset_id=appended.id,
                base_model_id=base_model.id,
                max_seq_length=64,
                eval_fraction=0.2,
            ),
            timeout=30,
        )
        .report
    )
    assert report.passed and report.row_count == 10
    assert report.task_type == common_pb2.TASK_TYPE_CHAT
    assert (report.train_rows, report.eval_rows) == (8, 2)


@pytest.mark.parametrize(
    ("row", "task"),
    [
        ({"prompt": "2+2=", "completion": "4"}, "completion"),
        ({"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away."}, "preference"),
        ({"instruction": "Add", "input": "2 2", "output": "4"}, "instruction"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "chat"),
    ],
)
def test_dataset_versions_record_the_trainer_task_type(
    stub, register, incoming, row, task
):
    """The registry's detection names the same task the trainer will train."""
    path = _write(incoming / f"{task}.jsonl", _jsonl([row]))
    artifact = register(DATASET, f"ds-{task}", path).artifact
    assert artifact.metadata["task_type"] == task
