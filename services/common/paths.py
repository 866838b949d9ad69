"""Confinement of request-supplied paths and atomic file publication."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from services.common.errors import InvalidArgument, NotFound, shorten


def confine(
    raw: str, roots: Iterable[Path], *, field: str, must_exist: bool = True
) -> Path:
    """Resolves a request path and insists it lies under one of `roots`.

    Symlinks are resolved first, so a link pointing outside a root is refused too.
    """
    if not raw:
        raise InvalidArgument(f"{field} is required", field=field)
    roots = [Path(r).resolve() for r in roots]
    shown = shorten(raw)
    try:
        resolved = Path(raw).expanduser().resolve()
        exists = resolved.exists()
    except (OSError, ValueError) as exc:  # name too long, NUL byte, ...
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidArgument(
            f"{field} {shown!r} is not a usable path: {reason}", field=field
        ) from None
    if not any(resolved == r or r in resolved.parents for r in roots):
        raise InvalidArgument(
            f"{field} {shown!r} is outside the allowed roots "
            f"({', '.join(str(r) for r in roots)}); copy the file under the data "
            "directory or add its folder to LORAFLEET_ALLOWED_ROOTS",
            field=field,
        )
    if must_exist and not exists:
        raise NotFound(f"{field} {shown!r} does not exist", field=field)
    return resolved


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_directory(final: Path):
    """Yields a temp directory beside `final`, renamed into place on success.

    Readers never see a half-written directory: either the old state or the
    complete new one. On error the temp directory is removed.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    )
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Writes bytes to a temp file beside `path`, fsyncs and renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
