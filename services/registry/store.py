"""Content-addressed artifact store: sha256 blobs plus read-only version directories."""

from __future__ import annotations

import abc
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import (
    Aborted,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.common.paths import confine, fsync_dir

CHUNK_BYTES = 1 << 20
MAX_PATH_CHARS = 1024  # artifact_files.path
DIGEST_PREFIX = "sha256:"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(value: str, *, field: str = "sha256") -> str:
    if not SHA256_RE.match(value or ""):
        raise InvalidArgument(
            f"{field} {value!r} is not a lower-case hex sha256 (64 characters)",
            field=field,
        )
    return value


@dataclass(frozen=True)
class GcResult:
    deleted_blobs: int = 0
    deleted_bytes: int = 0
    deleted_version_dirs: int = 0


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
                    f"file path {rel[:80]!r}... is longer than "
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
            f"source_path {str(source)!r} holds no files", field="source_path"
        )
    return sorted(pairs)


class ArtifactStore(abc.ABC):
    """Where artifact bytes live; the registry database only holds manifests."""

    def scan(self, files: Sequence[tuple[str, Path]]) -> Manifest:
        """Hashes the source files without storing anything."""
        entries = []
        for rel, src in files:
            sha, size = hash_file(src)
            entries.append(FileEntry(rel, sha, size))
        return Manifest.of(entries)

    @abc.abstractmethod
    def put(self, files: Sequence[tuple[str, Path]], manifest: Manifest) -> None:
        """Stores the files of a scanned manifest; Aborted if they changed since."""

    def ingest(self, files: Sequence[tuple[str, Path]]) -> Manifest:
        manifest = self.scan(files)
        self.put(files, manifest)
        return manifest

    def scratch_dir(self) -> Path:
        """Where files about to be stored are assembled (appended datasets)."""
        return Path(tempfile.gettempdir())

    @abc.abstractmethod
    def location(self, digest: str) -> str:
        """Where readers find the files of the version with this digest."""

    @abc.abstractmethod
    def verify(self, manifest: Manifest) -> None:
        """Re-hashes the stored files; raises DataLoss on any mismatch."""

    # -- blobs, for clients without the shared volume ------------------------

    @abc.abstractmethod
    def blob_size(self, sha256: str) -> int | None:
        """The size of a stored blob, None when it is not stored."""

    @abc.abstractmethod
    def blob_file(self, sha256: str) -> Path:
        """A readable local file with the blob's bytes (content inspection)."""

    @abc.abstractmethod
    def upload_status(self, sha256: str) -> tuple[int, bool]:
        """(committed offset, complete) of a blob upload."""

    @abc.abstractmethod
    def upload(
        self, sha256: str, size: int, offset: int, chunks: Iterable[bytes]
    ) -> bool:
        """Appends `chunks` at `offset`; publishes the blob once it verifies.

        Returns True when the blob already existed and nothing was written.
        """

    @abc.abstractmethod
    def read_blob(self, sha256: str, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """(size, chunks from offset) of a verified blob; DataLoss if corrupt."""

    @abc.abstractmethod
    def collect_garbage(
        self,
        referenced_blobs: set[str],
        referenced_digests: set[str],
        *,
        min_age_s: float,
        dry_run: bool = False,
    ) -> GcResult:
        """Deletes blobs and version directories nothing references."""


class LocalStore(ArtifactStore):
    """A store on a local or shared POSIX volume.

    Layout under `root`: ``objects/sha256/<2 hex>/<hex>`` holds each distinct
    file once; ``versions/<manifest hex>/<path>`` are hard links to those blobs
    (copies across devices), so a version directory can be handed to loaders.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.objects = self.root / "objects" / "sha256"
        self.versions = self.root / "versions"
        self.tmp = self.root / "tmp"
        self.uploads = self.root / "uploads"
        for d in (self.objects, self.versions, self.tmp, self.uploads):
            d.mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def location(self, digest: str) -> str:
        return str(self.versions / digest.removeprefix(DIGEST_PREFIX))

    def scratch_dir(self) -> Path:
        return self.tmp  # same volume, swept by collect_garbage if abandoned

    def put(self, files: Sequence[tuple[str, Path]], manifest: Manifest) -> None:
        by_path = {e.path: e for e in manifest.files}
        for rel, src in files:
            self._store_blob(src, by_path[rel])
        self._materialise(manifest)

    def _store_blob(self, src: Path, entry: FileEntry) -> None:
        # Known content (re-registering, shared tokenizer files) costs no write.
        blob = self.blob_path(entry.sha256)
        if blob.exists() and blob.stat().st_size == entry.size_bytes:
            _touch(blob)  # garbage collection spares recently used blobs
            return
        blob.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="blob.", dir=self.tmp)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != entry.sha256:
                raise Aborted(
                    f"file {entry.path!r} changed while it was being "
                    "registered; register it again once it is complete"
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, blob)
            fsync_dir(blob.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _materialise(self, manifest: Manifest) -> None:
        final = Path(self.location(manifest.digest))
        if final.exists():
            _touch(final)
            return
        staging = Path(tempfile.mkdtemp(prefix="version.", dir=self.tmp))
        try:
            for entry in manifest.files:
                dest = staging / entry.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(self.blob_path(entry.sha256), dest)
            subdirs = [p for p in staging.rglob("*") if p.is_dir()]
            for d in sorted(subdirs, reverse=True):  # deepest first
                d.chmod(0o555)
            staging.chmod(0o555)
            try:
                os.rename(staging, final)
            except OSError:
                if not final.exists():
                    raise
                _remove_tree(staging)  # a concurrent ingest published it first
            fsync_dir(self.versions)
        except BaseException:
            _remove_tree(staging)
            raise

    def verify(self, manifest: Manifest) -> None:
        root = Path(self.location(manifest.digest))
        recomputed = manifest_digest(manifest.files)
        if recomputed != manifest.digest:
            raise DataLoss(
                f"recorded manifest hashes to {recomputed}, not the "
                f"recorded digest {manifest.digest}"
            )
        for entry in manifest.files:
            path = root / entry.path
            if not path.is_file():
                raise DataLoss(f"file {entry.path!r} is missing from {root}")
            sha, size = hash_file(path)
            if sha != entry.sha256 or size != entry.size_bytes:
                raise DataLoss(
                    f"file {entry.path!r} in {root} is corrupt: expected sha256 "
                    f"{entry.sha256} ({entry.size_bytes} bytes), found sha256 {sha} "
                    f"({size} bytes)"
                )

    # -- blobs ----------------------------------------------------------------

    def blob_size(self, sha256: str) -> int | None:
        try:
            return self.blob_path(check_sha256(sha256)).stat().st_size
        except FileNotFoundError:
            return None

    def blob_file(self, sha256: str) -> Path:
        return self.blob_path(check_sha256(sha256))

    def _part(self, sha256: str) -> Path:
        return self.uploads / f"{sha256}.part"

    def upload_status(self, sha256: str) -> tuple[int, bool]:
        size = self.blob_size(sha256)
        if size is not None:
            return size, True
        try:
            return self._part(sha256).stat().st_size, False
        except FileNotFoundError:
            return 0, False

    def upload(
        self, sha256: str, size: int, offset: int, chunks: Iterable[bytes]
    ) -> bool:
        """Writes to uploads/<sha>.part under an exclusive lock, then renames.

        Bytes are written unbuffered, so what reached the kernel survives a
        killed process and is the committed offset; the blob path only ever
        holds a complete, verified file (atomic rename after the hash check).
        """
        check_sha256(sha256)
        if size < 0 or offset < 0 or offset > size:
            raise InvalidArgument(
                f"offset {offset} and size_bytes {size} must satisfy "
                "0 <= offset <= size_bytes",
                field="offset",
            )
        existing = self.blob_size(sha256)
        if existing is not None:
            if existing != size:
                raise InvalidArgument(
                    f"blob sha256 {sha256} is stored with {existing} bytes, not "
                    f"size_bytes {size}",
                    field="size_bytes",
                )
            return True
        lock_fd = os.open(self.uploads / f"{sha256}.lock", os.O_CREAT | os.O_RDWR)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise Aborted(
                    f"another upload of blob {sha256} is in progress; retry "
                    "after it finishes (GetUploadStatus shows its offset)"
                ) from exc
            if self.blob_size(sha256) is not None:  # finished while we waited
                return True
            self._receive(sha256, size, offset, chunks)
            return False
        finally:
            os.close(lock_fd)  # releases the flock

    def _receive(
        self, sha256: str, size: int, offset: int, chunks: Iterable[bytes]
    ) -> None:
        part = self._part(sha256)
        committed = part.stat().st_size if part.exists() else 0
        if offset > committed:
            raise FailedPrecondition(
                f"upload of {sha256} has {committed} bytes committed; resume at "
                f"offset {committed} or lower, not {offset}",
                field="offset",
            )
        h = hashlib.sha256()
        with open(part, "a+b", buffering=0) as out:
            out.truncate(offset)
            out.seek(0)
            remaining = offset
            while remaining:
                chunk = out.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
            position = offset
            try:
                for chunk in chunks:
                    if not chunk:
                        continue
                    if position + len(chunk) > size:
                        raise InvalidArgument(
                            f"upload of {sha256} sent more than size_bytes {size}",
                            field="data",
                        )
                    out.write(chunk)
                    h.update(chunk)
                    position += len(chunk)
            finally:
                os.fsync(out.fileno())
        if position != size:
            raise FailedPrecondition(
                f"upload of {sha256} ended at offset {position} of {size}; resume "
                f"with offset {position}",
                field="data",
            )
        actual = h.hexdigest()
        if actual != sha256:
            part.unlink(missing_ok=True)
            raise DataLoss(
                f"uploaded bytes hash to sha256 {actual}, not the declared "
                f"sha256 {sha256}; the upload was discarded"
            )
        blob = self.blob_path(sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(part, 0o444)
        os.replace(part, blob)
        fsync_dir(blob.parent)

    def read_blob(self, sha256: str, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        size = self.blob_size(sha256)
        if size is None:
            raise NotFound(f"no blob with sha256 {sha256} is stored", field="sha256")
        if offset < 0 or offset > size:
            raise InvalidArgument(
                f"offset {offset} is outside the blob's {size} bytes", field="offset"
            )
        path = self.blob_path(sha256)
        actual, _ = hash_file(path)
        if actual != sha256:
            raise DataLoss(
                f"stored blob {sha256} is corrupt: its bytes hash to {actual}; "
                "it will not be served"
            )

        def chunks() -> Iterator[bytes]:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    h.update(chunk)
                    if fh.tell() > offset:
                        yield chunk[max(0, offset - (fh.tell() - len(chunk))) :]
            if h.hexdigest() != sha256:
                raise DataLoss(
                    f"stored blob {sha256} changed while it was served: it now "
                    f"hashes to {h.hexdigest()}; discard what was received"
                )

        return size, chunks()

    def collect_garbage(
        self,
        referenced_blobs: set[str],
        referenced_digests: set[str],
        *,
        min_age_s: float,
        dry_run: bool = False,
    ) -> GcResult:
        cutoff = time.time() - min_age_s
        blobs = freed = dirs = 0
        for blob in self.objects.glob("*/*"):
            try:
                st = blob.stat()
            except FileNotFoundError:
                continue
            if blob.name in referenced_blobs or st.st_mtime > cutoff:
                continue
            blobs, freed = blobs + 1, freed + st.st_size
            if not dry_run:
                blob.unlink(missing_ok=True)
        for version in self.versions.iterdir():
            if DIGEST_PREFIX + version.name in referenced_digests:
                continue
            if version.stat().st_mtime > cutoff:
                continue
            dirs += 1
            if not dry_run:
                _remove_tree(version)
        if not dry_run:
            for stale in self.tmp.iterdir():  # left by killed registrations
                if stale.stat().st_mtime <= cutoff:
                    if stale.is_dir():
                        _remove_tree(stale)
                    else:
                        stale.unlink(missing_ok=True)
        return GcResult(blobs, freed, dirs)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _link_or_copy(blob: Path, dest: Path) -> None:
    try:
        os.link(blob, dest)
    except OSError:  # EXDEV across devices, EPERM on some network filesystems
        shutil.copyfile(blob, dest)
        os.chmod(dest, 0o444)


def _remove_tree(path: Path) -> None:
    """Removes a staging tree whose directories were already made read-only."""
    if path.exists():
        for d in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            d.chmod(stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)
