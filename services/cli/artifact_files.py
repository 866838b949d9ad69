"""An artifact's files written to a folder: copied from the shared store when it
is mounted here, else downloaded from the registry; each checked against its
recorded sha256 (a partial or corrupted copy is an error, not a model)."""

from __future__ import annotations

import sys
from pathlib import Path

from services.cli.deployments import UsageError


def write_files(client, artifact, out: Path) -> None:
    """`artifact`'s files into `out` (see the module docstring)."""
    import hashlib

    from lorafleet.v1 import registry_pb2

    out.mkdir(parents=True, exist_ok=True)
    source = Path(artifact.local_path)
    for entry in artifact.files:
        target = out / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(target, "wb") as sink:
            if (source / entry.path).is_file():
                with open(source / entry.path, "rb") as stored:
                    for chunk in iter(lambda: stored.read(1 << 20), b""):
                        sink.write(chunk)
                        digest.update(chunk)
            else:
                for part in client.registry.DownloadBlob(
                    registry_pb2.DownloadBlobRequest(sha256=entry.sha256), timeout=3600
                ):
                    sink.write(part.data)
                    digest.update(part.data)
        if digest.hexdigest() != entry.sha256:
            raise UsageError(
                f"{entry.path}: got sha256 {digest.hexdigest()}, the registry "
                f"recorded {entry.sha256}; run the command again"
            )
    print(f"wrote {len(artifact.files)} files to {out}", file=sys.stderr)
