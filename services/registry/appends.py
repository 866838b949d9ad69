"""Incremental datasets: a new dataset version made of an old one plus new rows."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from services.common.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    shorten,
)
from services.common.paths import confine
from services.registry.content import inspect_content, json_type, task_of_keys
from services.registry.domain import Artifact, ArtifactKind, ParentRef, check_version
from services.registry.manifests import FileEntry, Manifest, check_sha256
from services.registry.queries import load_artifacts, resolve_ref
from services.registry.repository import Registry

APPENDED_FROM = "appended_from"


@dataclass
class AppendResult:
    artifact: Artifact
    # True when nothing new was recorded (retried append, or all duplicates).
    existed: bool
    previous_row_count: int
    appended_rows: int
    dropped_duplicates: int

    @property
    def row_count(self) -> int:
        return int(self.artifact.metadata.get("rows", 0))


@dataclass(frozen=True)
class _NewRows:
    """Where the appended rows come from, and how errors name that source."""

    field: str
    label: str
    open: Any  # () -> binary file object


@dataclass
class _Counts:
    previous: int = 0
    appended: int = 0
    dropped: int = 0


class DatasetAppends:
    """Appends rows to dataset versions; every check passes before anything is kept.

    The previous file is copied byte for byte (verified against its recorded
    sha256 on the way), new rows are checked against the dataset's recorded
    schema and task type, and the assembled file is registered through the
    same path as any version, so digests, idempotence and explicit versions
    behave exactly as with RegisterArtifact.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def append(
        self,
        dataset_ref: str,
        *,
        source_path: str = "",
        blob_sha256: str = "",
        rows: bytes = b"",
        version: int = 0,
        tags: Mapping[str, str] | None = None,
        deduplicate: bool = False,
        principal: str = "",
        trace_id: str = "",
    ) -> AppendResult:
        source = self._source(source_path, blob_sha256, rows)
        store = self.registry.store
        check_version(version)
        previous = self.registry.db.read(
            lambda s: load_artifacts(
                s, [resolve_ref(s, dataset_ref, field="dataset_id")], store
            )[0]
        )
        entry = _dataset_file(previous)
        schema, task = self._schema_of(previous, entry)
        with _scratch(store.scratch_dir()) as scratch:
            assembled = scratch / Path(entry.path).name
            counts = _Counts()
            with open(assembled, "wb") as out:
                writer = _HashingWriter(out)
                seen = _copy_previous(
                    store.blob_file(entry.sha256), entry, writer, counts, deduplicate
                )
                _append_rows(
                    source, previous, schema, task, writer, counts, seen, deduplicate
                )
            if counts.appended == 0:
                # Every row was a dropped duplicate: the dataset already holds them.
                return AppendResult(previous, True, counts.previous, 0, counts.dropped)
            new_entry = FileEntry(entry.path, writer.sha256(), writer.size)
            pairs = [(entry.path, assembled)]
            derived = inspect_content(ArtifactKind.DATASET, pairs)
            manifest = Manifest.of([new_entry])
            store.put(pairs, manifest)
        facts = {
            "appended_rows": counts.appended,
            "previous_row_count": counts.previous,
            "dropped_duplicates": counts.dropped,
        }
        metadata = {**previous.metadata, **derived, **facts}
        reg = self.registry.record_version(
            kind=ArtifactKind.DATASET,
            name=previous.name,
            manifest=manifest,
            metadata=metadata,
            tags={**previous.tags, **dict(tags or {})},
            parents=[ParentRef(previous.id, APPENDED_FROM)],
            version=version,
            principal=principal,
            trace_id=trace_id,
            action="dataset.append",
            audit_extra={"appended_from": previous.id, **facts},
        )
        return AppendResult(
            reg.artifact, reg.existed, counts.previous, counts.appended, counts.dropped
        )

    def _source(self, source_path: str, blob_sha256: str, rows: bytes) -> _NewRows:
        given = [
            name
            for name, value in (
                ("source_path", source_path),
                ("blob_sha256", blob_sha256),
                ("rows", rows),
            )
            if value
        ]
        if len(given) != 1:
            found = f"got {' and '.join(given)}" if given else "got none"
            raise InvalidArgument(
                "give the new rows as exactly one of source_path (a JSONL file on "
                "the shared volume), blob_sha256 (an uploaded blob) or rows (JSONL "
                f"bytes); {found}",
                field=given[-1] if given else "rows",
            )
        if source_path:
            path = confine(source_path, self.registry.roots, field="source_path")
            if not path.is_file():
                raise InvalidArgument(
                    f"source_path {shorten(source_path)!r} is not a file; give one "
                    "JSONL file of rows to append",
                    field="source_path",
                )
            return _NewRows(
                "source_path",
                f"source_path {shorten(source_path)!r}",
                lambda: open(path, "rb"),
            )
        if blob_sha256:
            check_sha256(blob_sha256, field="blob_sha256")
            if self.registry.store.intact_blob_size(blob_sha256) is None:
                raise FailedPrecondition(
                    f"no blob with sha256 {blob_sha256} is stored; upload it with "
                    "UploadBlob first",
                    field="blob_sha256",
                )
            blob = self.registry.store.blob_file(blob_sha256)
            return _NewRows(
                "blob_sha256", f"blob {blob_sha256[:12]}", lambda: open(blob, "rb")
            )
        return _NewRows("rows", "rows", lambda: io.BytesIO(rows))

    def _schema_of(
        self, previous: Artifact, entry: FileEntry
    ) -> tuple[dict[str, list[str]], str]:
        """The recorded schema and task type; derived afresh for older versions."""
        meta = previous.metadata
        if isinstance(meta.get("schema"), dict) and meta.get("task_type"):
            return meta["schema"], str(meta["task_type"])
        facts = inspect_content(
            ArtifactKind.DATASET,
            [(entry.path, self.registry.store.blob_file(entry.sha256))],
        )
        return facts["schema"], facts["task_type"]


def _dataset_file(previous: Artifact) -> FileEntry:
    if previous.kind is not ArtifactKind.DATASET:
        raise FailedPrecondition(
            f"dataset_id {previous.ref} ({previous.id}) is a {previous.kind.value}, "
            "not a DATASET; only dataset versions can be appended to",
            field="dataset_id",
        )
    if len(previous.files) != 1:
        raise FailedPrecondition(
            f"dataset {previous.ref} holds {len(previous.files)} JSONL files; "
            "appending needs a single-file dataset (the format the trainer reads)",
            field="dataset_id",
        )
    return previous.files[0]


class _HashingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0
        self.last = b"\n"  # an empty file needs no newline before new rows

    def write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.hash.update(data)
            self.size += len(data)
            self.last = data[-1:]

    def sha256(self) -> str:
        return self.hash.hexdigest()


def _row_key(row: Any) -> bytes:
    """Rows equal as JSON values share a key, whatever their key order or spacing."""
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def _copy_previous(
    blob: Path,
    entry: FileEntry,
    writer: _HashingWriter,
    counts: _Counts,
    deduplicate: bool,
) -> set[bytes]:
    """Copies the previous file, counting rows; keys of its rows when deduplicating."""
    seen: set[bytes] = set()
    check = hashlib.sha256()
    try:
        with open(blob, "rb") as fh:
            for line in _lines(fh):
                check.update(line)
                writer.write(line)
                if not line.strip():
                    continue
                counts.previous += 1
                if deduplicate:
                    try:
                        seen.add(_row_key(json.loads(line)))
                    except ValueError:
                        pass  # an invalid row cannot equal a valid new one
    except FileNotFoundError as exc:
        raise DataLoss(
            f"the stored file {entry.path!r} (sha256 {entry.sha256}) is missing"
        ) from exc
    if check.hexdigest() != entry.sha256:
        raise DataLoss(
            f"the stored file {entry.path!r} hashes to {check.hexdigest()}, not its "
            f"recorded sha256 {entry.sha256}; nothing was appended"
        )
    if writer.last != b"\n":
        writer.write(b"\n")
    return seen


def _append_rows(
    source: _NewRows,
    previous: Artifact,
    schema: Mapping[str, list[str]],
    task: str,
    writer: _HashingWriter,
    counts: _Counts,
    seen: set[bytes],
    deduplicate: bool,
) -> None:
    with source.open() as fh:
        for number, line in enumerate(_lines(fh), start=1):
            if not line.strip():
                continue
            row = _parse(line, number, source)
            problem = _mismatch(row, schema, task)
            if problem:
                raise FailedPrecondition(
                    f"{source.label} line {number} does not fit dataset "
                    f"{previous.ref} ({task} rows): {problem}; keys expected "
                    f"{sorted(schema)}, found {sorted(row)}",
                    field=source.field,
                )
            if deduplicate:
                key = _row_key(row)
                if key in seen:
                    counts.dropped += 1
                    continue
                seen.add(key)
            writer.write(line if line.endswith(b"\n") else line + b"\n")
            counts.appended += 1
    if counts.appended == 0 and counts.dropped == 0:
        raise InvalidArgument(
            f"{source.label} holds no rows; give at least one JSON object per line",
            field=source.field,
        )


def _lines(fh: IO[bytes]) -> Iterator[bytes]:
    """Lines with their endings (the last one may lack it)."""
    yield from fh


def _parse(line: bytes, number: int, source: _NewRows) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"{source.label} line {number} is not valid JSON ({exc.msg} at column "
            f"{exc.colno}); each line must hold one JSON object",
            field=source.field,
        ) from exc
    except ValueError as exc:  # bytes that are not UTF-8 text
        raise InvalidArgument(
            f"{source.label} line {number} is not UTF-8 text ({exc})",
            field=source.field,
        ) from exc
    if not isinstance(row, dict):
        raise InvalidArgument(
            f"{source.label} line {number} holds a JSON {json_type(row)}, not an "
            "object; each line must hold one JSON object",
            field=source.field,
        )
    return row


def _mismatch(row: dict[str, Any], schema: Mapping[str, list[str]], task: str) -> str:
    """Why a row would change the dataset's schema or task type ("" if it fits)."""
    extra = sorted(set(row) - set(schema))
    if extra:
        return f"unexpected key(s) {extra}"
    row_task = task_of_keys(row)
    if row_task != task:
        return f"its keys make a {row_task} row, not a {task} row"
    for key, value in row.items():
        found = json_type(value)
        if found not in schema[key]:
            return (
                f"key {key!r} holds a {found}, where the dataset's rows hold "
                f"{' or '.join(schema[key])}"
            )
    return ""


@contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="append.", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
