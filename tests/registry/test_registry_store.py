"""The content-addressed store on its own: digests, linking, fallbacks, races."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.common.errors import Aborted, DataLoss, InvalidArgument
from services.registry.manifests import (
    FileEntry,
    Manifest,
    list_source,
    manifest_digest,
)
from services.registry.store import LocalStore


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha")
    (root / "sub" / "b.txt").write_bytes(b"beta" * 1000)
    (root / "dup.txt").write_bytes(b"alpha")  # same content, one blob
    return root


def test_manifest_digest_ignores_listing_order():
    files = [FileEntry("b", "1" * 64, 2), FileEntry("a", "2" * 64, 3)]
    assert manifest_digest(files) == manifest_digest(reversed(files))
    assert manifest_digest(files) != manifest_digest(files[:1])


def test_ingest_links_blobs_into_a_version_directory(tree, tmp_path):
    store = LocalStore(tmp_path / "store")
    manifest = store.ingest(list_source(tree, [tmp_path]))
    version = Path(store.location(manifest.digest))
    assert [f.path for f in manifest.files] == ["a.txt", "dup.txt", "sub/b.txt"]
    assert (version / "sub" / "b.txt").read_bytes() == b"beta" * 1000
    blob = store.blob_path(manifest.files[0].sha256)
    assert os.path.samefile(blob, version / "a.txt")
    assert os.path.samefile(blob, version / "dup.txt")
    assert store.ingest(list_source(tree, [tmp_path])) == manifest  # idempotent
    store.verify(manifest)


def test_copies_when_hard_links_fail(tree, tmp_path, monkeypatch):
    def no_links(*_args):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    store = LocalStore(tmp_path / "store")
    manifest = store.ingest(list_source(tree, [tmp_path]))
    copy = Path(store.location(manifest.digest)) / "a.txt"
    assert copy.read_bytes() == b"alpha"
    assert not os.path.samefile(copy, store.blob_path(manifest.files[0].sha256))
    store.verify(manifest)


def test_concurrent_ingests_of_one_version(tree, tmp_path):
    store = LocalStore(tmp_path / "store")
    files = list_source(tree, [tmp_path])
    with ThreadPoolExecutor(8) as pool:
        manifests = list(pool.map(lambda _: store.ingest(files), range(8)))
    assert len({m.digest for m in manifests}) == 1
    assert list((tmp_path / "store" / "versions").iterdir()) == [
        Path(store.location(manifests[0].digest))
    ]
    assert not list((tmp_path / "store" / "tmp").iterdir())  # no leftovers


def test_file_changed_between_scan_and_put_is_aborted(tree, tmp_path):
    store = LocalStore(tmp_path / "store")
    files = list_source(tree, [tmp_path])
    manifest = store.scan(files)
    (tree / "a.txt").write_bytes(b"ALPHA")
    with pytest.raises(Aborted, match="a.txt"):
        store.put(files, manifest)


def test_verify_reports_missing_and_tampered_manifests(tree, tmp_path):
    store = LocalStore(tmp_path / "store")
    manifest = store.ingest(list_source(tree, [tmp_path]))
    forged = Manifest(manifest.files[:1], manifest.digest)
    with pytest.raises(DataLoss, match="recorded manifest"):
        store.verify(forged)
    version = Path(store.location(manifest.digest))
    version.chmod(0o755)
    (version / "a.txt").unlink()
    with pytest.raises(DataLoss, match="'a.txt' is missing"):
        store.verify(manifest)


def test_symlinks_are_followed_only_inside_roots(tree, tmp_path):
    inside = tmp_path / "blobs" / "real.txt"
    inside.parent.mkdir()
    inside.write_bytes(b"linked")
    os.symlink(inside, tree / "link.txt")
    files = dict(list_source(tree, [tmp_path]))
    assert files["link.txt"] == inside.resolve()
    with pytest.raises(InvalidArgument, match="link.txt"):
        list_source(tree, [tree])  # the target lies outside this root
    with pytest.raises(InvalidArgument, match="no files"):
        (tmp_path / "empty").mkdir()
        list_source(tmp_path / "empty", [tmp_path])
