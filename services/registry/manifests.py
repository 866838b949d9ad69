"""Content addressing: file entries, manifests and their digests, source listing.

A version is named by the digest of its manifest, so these rules are what makes
two registrations of the same files the same version, on any store.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument, shorten
from services.common.paths import confine

CHUNK_BYTES = 1 << 20
MAX_PATH_CHARS = 1024  # artifact_files.path
DIGEST_PREFIX = "sha256:"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(value: str, *, field: str = "sha256") -> str:
    if not SHA256_RE.match(value or ""):
        raise InvalidArgument(
            f"{field} {shorten(value)!r} is not a lower-case hex sha256 "
            "(64 characters)",
            field=field,
        )
    return value


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: '/'-separated path relative to the version root."""

    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Manifest:
    """The files of one version and the digest that names it."""

    files: tuple[FileEntry, ...]
    digest: str

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @classmethod
    def of(cls, files: Iterable[FileEntry]) -> Manifest:
        ordered = tuple(sorted(files, key=lambda f: f.path))
        return cls(files=ordered, digest=manifest_digest(ordered))


def manifest_digest(files: Iterable[FileEntry]) -> str:
    """sha256 over the sorted "<path>\\t<sha256>\\t<size>\\n" lines.

    Callers (trainer, merger, CLI) can compute it before registering and pass it
    as `expected_digest`, so a copy that went wrong in transit is caught.
    """
    lines = sorted(f"{f.path}\t{f.sha256}\t{f.size_bytes}\n" for f in files)
    return DIGEST_PREFIX + hashlib.sha256("".join(lines).encode()).hexdigest()


def hash_file(path: Path) -> tuple[str, int]:
    """Streams a file in 1 MiB chunks; returns (hex sha256, size)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def list_source(source: Path, roots: Sequence[Path]) -> list[tuple[str, Path]]:
    """(relative path, real file) pairs of a file or directory, sorted by path.

    Symlinks are followed only to files inside `roots` (Hugging Face snapshots
    are links into a blob folder), so a link cannot smuggle in /etc/shadow.
    """
    if source.is_file():
        return [(source.name, source)]
    pairs: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source):
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                raise InvalidArgument(
                    f"source_path contains a symlinked directory "
                    f"{(base / d).relative_to(source).as_posix()!r}; copy it instead",
                    field="source_path",
                )
        for name in filenames:
            path = base / name
            rel = path.relative_to(source).as_posix()
            if len(rel) > MAX_PATH_CHARS:
                raise InvalidArgument(
                    f"file path {shorten(rel)!r} is longer than "
                    f"{MAX_PATH_CHARS} characters",
                    field="source_path",
                )
            real = path
            if path.is_symlink():
                real = confine(str(path), roots, field=f"source_path file {rel!r}")
            if not real.is_file():
                raise InvalidArgument(
                    f"source_path entry {rel!r} is not a regular file",
                    field="source_path",
                )
            pairs.append((rel, real))
    if not pairs:
        raise InvalidArgument(
            f"source_path {shorten(str(source))!r} holds no files", field="source_path"
        )
    return sorted(pairs)
