"""Content-addressed artifact store: sha256 blobs plus read-only version directories."""

from __future__ import annotations

import abc
import fcntl
import hashlib
import logging
import os
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
from services.common.paths import fsync_dir
from services.registry.manifests import (
    CHUNK_BYTES,
    DIGEST_PREFIX,
    FileEntry,
    Manifest,
    check_sha256,
    hash_file,
    manifest_digest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcResult:
    deleted_blobs: int = 0
    deleted_bytes: int = 0
    deleted_version_dirs: int = 0


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
        """The size of a stored blob, None when it is not stored (no hashing)."""

    @abc.abstractmethod
    def intact_blob_size(self, sha256: str, size: int | None = None) -> int | None:
        """The size of a stored blob whose bytes still hash to `sha256`.

        A blob that no longer does (truncated, altered on disk) is quarantined
        and reported as not stored (None), so it can be uploaded again. With
        `size` (what the caller expects), a file of exactly that size is
        trusted without hashing; otherwise the file is hashed.
        """

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
    A blob found corrupt (size or hash) moves to ``quarantine/`` and counts as
    not stored, so the next upload of that digest is accepted.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.objects = self.root / "objects" / "sha256"
        self.versions = self.root / "versions"
        self.tmp = self.root / "tmp"
        self.uploads = self.root / "uploads"
        # Corrupt blobs are moved here (kept for inspection, swept by gc).
        self.quarantine = self.root / "quarantine"
        for d in (self.objects, self.versions, self.tmp, self.uploads, self.quarantine):
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
        stored = self.blob_size(entry.sha256)
        if stored == entry.size_bytes:
            _touch(blob)  # garbage collection spares recently used blobs
            return
        if stored is not None:  # truncated or grown on disk: replaced below
            log.warning(
                "stored blob %s has %d bytes, not %d; storing it again",
                entry.sha256,
                stored,
                entry.size_bytes,
            )
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

    def intact_blob_size(self, sha256: str, size: int | None = None) -> int | None:
        path = self.blob_path(check_sha256(sha256))
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if size is not None and st.st_size == size:
                    return size
                h = hashlib.sha256()
                while chunk := fh.read(CHUNK_BYTES):
                    h.update(chunk)
        except FileNotFoundError:
            return None
        if h.hexdigest() == sha256:
            return st.st_size
        self._quarantine(
            path, st.st_ino, f"{st.st_size} bytes hashing to {h.hexdigest()}"
        )
        return None

    def _quarantine(self, path: Path, inode: int, found: str) -> None:
        """Moves a corrupt blob out of the way, so its digest is free again.

        Only the file that was hashed (`inode`) is moved, not a good copy an
        upload published meanwhile. Version directories hard-link blobs, so
        they keep the corrupt inode; GetArtifact with verify reports DATA_LOSS.
        """
        target = self.quarantine / f"{path.name}.{time.time_ns()}"
        try:
            if os.stat(path).st_ino != inode:
                return  # already replaced by a fresh upload
            os.replace(path, target)
        except FileNotFoundError:
            return  # another request quarantined it first
        _touch(target)  # kept at least gc's min_age from now
        log.warning(
            "stored blob %s was corrupt (%s); moved to %s, it can be uploaded again",
            path.name,
            found,
            target,
        )

    def blob_file(self, sha256: str) -> Path:
        return self.blob_path(check_sha256(sha256))

    def _part(self, sha256: str) -> Path:
        return self.uploads / f"{sha256}.part"

    def upload_status(self, sha256: str) -> tuple[int, bool]:
        # "complete" promises a verified blob, and no size is given to compare
        # with, so a stored blob is hashed (a corrupt one becomes incomplete).
        size = self.intact_blob_size(sha256)
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
        # Hashed: the caller is sending the bytes anyway, and "existed" must
        # not hide a blob that was truncated or altered on disk.
        existing = self.intact_blob_size(sha256)
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
        path = self.blob_path(sha256)
        stored = path.exists()
        size = self.intact_blob_size(sha256)
        if size is None and stored:
            raise DataLoss(
                f"stored blob {sha256} is corrupt and was quarantined; it will not "
                "be served: upload it again"
            )
        if size is None:
            raise NotFound(f"no blob with sha256 {sha256} is stored", field="sha256")
        if offset < 0 or offset > size:
            raise InvalidArgument(
                f"offset {offset} is outside the blob's {size} bytes", field="offset"
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
            # tmp: left by killed registrations; quarantine: corrupt blobs
            stale_files = [*self.tmp.iterdir(), *self.quarantine.iterdir()]
            for stale in stale_files:
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
