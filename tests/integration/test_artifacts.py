"""The fsspec artifact store: round trips, digests, and keys that try to leave the root."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from whenflow.domain.errors import WhenflowError
from whenflow.storage.artifacts import ArtifactPathError, FsspecArtifactStore, canonical_key


@pytest.fixture
def store(tmp_path: Path) -> FsspecArtifactStore:
    return FsspecArtifactStore(str(tmp_path / "artifacts"))


def test_value_round_trip(store: FsspecArtifactStore) -> None:
    value = {"rows": [1, 2, 3], "name": "héllo", "nested": {"ok": True, "none": None}}
    ref = store.put_value("exec-1/extract/result.json", value)

    data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert ref.kind == "value"
    assert ref.content_type == "application/json"
    assert ref.size == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.uri.startswith("file://")
    assert ref.filename == "result.json"
    assert store.load_value(ref) == value
    local = Path(store.local_path(ref))
    assert local.read_bytes() == data
    assert local.is_relative_to(store.root)


def test_file_round_trip(store: FsspecArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    payload = os.urandom(3 * (1 << 20) + 17)  # several copy chunks
    source.write_bytes(payload)

    ref = store.put_file("exec-1/transform/report.csv", str(source))

    assert ref.kind == "file"
    assert ref.filename == "report.csv"
    assert ref.content_type == "text/csv"
    assert ref.size == len(payload)
    assert ref.sha256 == hashlib.sha256(payload).hexdigest()
    assert Path(store.local_path(ref)).read_bytes() == payload
    assert not [p for p in Path(store.root).rglob("*.part")]


def test_unknown_extension_is_octet_stream(store: FsspecArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "blob.whenflowdata"
    source.write_bytes(b"x")
    assert store.put_file("k/blob", str(source)).content_type == "application/octet-stream"


def test_overwriting_a_key_replaces_the_bytes(store: FsspecArtifactStore) -> None:
    store.put_value("k.json", 1)
    ref = store.put_value("k.json", [2])
    assert store.load_value(ref) == [2]


def test_default_root_is_under_whenflow_home(tmp_home: Path) -> None:
    store = FsspecArtifactStore()
    assert Path(store.root) == (tmp_home / "artifacts").resolve()
    assert store.load_value(store.put_value("a/b.json", {"x": 1})) == {"x": 1}


@pytest.mark.parametrize(
    ("key", "canonical"),
    [("a//b/./c.json", "a/b/c.json"), ("./x", "x"), ("dir/", "dir"), ("a.b..c", "a.b..c")],
)
def test_keys_are_canonicalised(key: str, canonical: str) -> None:
    assert canonical_key(key) == canonical


@pytest.mark.parametrize(
    "key",
    [
        "../escape.json",
        "a/../../escape.json",
        "a/..",
        "/etc/passwd",
        "C:/windows",
        "a\\..\\b",
        "file:///etc/passwd",
        "",
        ".",
        "nul\x00byte",
    ],
)
def test_escaping_keys_are_rejected(store: FsspecArtifactStore, key: str) -> None:
    with pytest.raises(ArtifactPathError):
        store.put_value(key, 1)


def test_symlink_escapes_are_rejected(store: FsspecArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (Path(store.root) / "link").symlink_to(outside, target_is_directory=True)
    (Path(store.root) / "leaf.json").symlink_to(outside / "target.json")

    with pytest.raises(ArtifactPathError, match="outside the artifact root"):
        store.put_value("link/escaped.json", 1)
    with pytest.raises(ArtifactPathError):
        store.put_value("leaf.json", 1)
    assert list(outside.iterdir()) == []


def test_a_symlink_that_stays_inside_is_fine(store: FsspecArtifactStore) -> None:
    (Path(store.root) / "real").mkdir()
    (Path(store.root) / "alias").symlink_to(Path(store.root) / "real")
    ref = store.put_value("alias/v.json", 5)
    assert store.load_value(ref) == 5


def test_references_outside_the_root_are_refused(
    store: FsspecArtifactStore, tmp_path: Path
) -> None:
    ref = store.put_value("ok.json", 1)
    secret = tmp_path / "secret.json"
    secret.write_text("42")
    for uri in (f"file://{secret}", ref.uri.replace("ok.json", "../secret.json")):
        forged = replace(ref, uri=uri)
        with pytest.raises(ArtifactPathError):
            store.load_value(forged)
        with pytest.raises(ArtifactPathError):
            store.local_path(forged)


def test_remote_filesystem_downloads_to_a_verified_cache(tmp_path: Path) -> None:
    # fsspec's in-memory filesystem is a real non-local backend, like s3:// without a server.
    root = f"memory://whenflow-test-{uuid.uuid4().hex}"
    store = FsspecArtifactStore(root, cache_dir=str(tmp_path / "cache"))
    source = tmp_path / "data.bin"
    source.write_bytes(b"remote bytes")

    value_ref = store.put_value("e/v.json", {"a": 1})
    file_ref = store.put_file("e/data.bin", str(source))

    assert value_ref.uri.startswith("memory://")
    assert store.load_value(value_ref) == {"a": 1}
    local = Path(store.local_path(file_ref))
    assert local.is_relative_to(tmp_path / "cache")
    assert local.read_bytes() == b"remote bytes"
    assert store.local_path(file_ref) == str(local)  # served from the cache the second time
    with pytest.raises(ArtifactPathError):
        store.put_value("../up.json", 1)
    with pytest.raises(WhenflowError, match="sha256"):
        store.local_path(replace(file_ref, sha256="0" * 64))
