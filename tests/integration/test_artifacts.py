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


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("where", ["local", "memory"])
def test_directory_round_trip(tmp_path: Path, where: str) -> None:
    root_url = str(tmp_path / "artifacts") if where == "local" else f"memory://{uuid.uuid4()}"
    store = FsspecArtifactStore(root_url, cache_dir=str(tmp_path / "cache"))
    source = tmp_path / "model"
    (source / "weights").mkdir(parents=True)
    (source / "weights" / "layer1.bin").write_bytes(os.urandom(3000))
    (source / "config.json").write_text('{"layers": 1}')

    ref = store.put_dir("exec-1/train/model/model", str(source))

    assert ref.kind == "directory"
    assert ref.filename == "model"
    assert ref.content_type == "application/gzip"
    assert ref.uri.endswith("exec-1/train/model/model.tar.gz")
    unpacked = Path(store.local_path(ref))
    assert unpacked.is_dir()
    assert unpacked.name == "model"
    assert _tree(unpacked) == _tree(source)
    assert store.local_path(ref) == str(unpacked)  # unpacked once, then reused


@pytest.mark.parametrize("member", ["../escaped.txt", "link-out"])
def test_an_archive_that_would_escape_is_refused(tmp_path: Path, member: str) -> None:
    import io
    import tarfile

    store = FsspecArtifactStore(str(tmp_path / "artifacts"), cache_dir=str(tmp_path / "cache"))
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        if member == "link-out":
            info.type = tarfile.SYMTYPE
            info.linkname = "../../../../outside"
            tar.addfile(info)
        else:
            data = b"pwned"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ref = replace(store.put_file("exec-1/n/out/d.tar.gz", str(evil)), kind="directory")

    with pytest.raises(WhenflowError, match="not a safe directory archive"):
        store.local_path(ref)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "cache" / "escaped.txt").exists()
    assert not any((tmp_path / "cache").rglob("*escaped*"))


def test_an_absolute_member_is_unpacked_inside_the_target(tmp_path: Path) -> None:
    import io
    import tarfile

    store = FsspecArtifactStore(str(tmp_path / "artifacts"), cache_dir=str(tmp_path / "cache"))
    archive = tmp_path / "abs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("/abs/escaped.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"inner"))
    ref = replace(store.put_file("exec-1/n/out/d.tar.gz", str(archive)), kind="directory")

    unpacked = Path(store.local_path(ref))
    assert (unpacked / "abs" / "escaped.txt").read_bytes() == b"inner"
    assert not Path("/abs/escaped.txt").exists()


def test_an_empty_directory_round_trips(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path / "artifacts"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    unpacked = Path(store.local_path(store.put_dir("e/n/out/empty", str(tmp_path / "empty"))))
    assert unpacked.is_dir()
    assert list(unpacked.iterdir()) == []


@pytest.mark.parametrize("filename", ["../escaped", "a/b", ".."])
def test_a_reference_whose_file_name_is_not_one_component_is_refused(
    tmp_path: Path, filename: str
) -> None:
    store = FsspecArtifactStore(str(tmp_path / "artifacts"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    ref = store.put_dir("e/n/out/d", str(tmp_path / "d"))
    with pytest.raises(ArtifactPathError):
        store.local_path(replace(ref, filename=filename))
    assert not (tmp_path / "escaped").exists()


def test_task_data_shaped_like_an_artifact_marker_reads_back_as_data() -> None:
    from whenflow.domain.variables import Variable
    from whenflow.engine.variable_pool import VariablePool

    pool = VariablePool(
        execution_id="e",
        pipeline="p",
        version="1",
        inputs={},
        node_ids=["a"],
        started_at=0.0,
        artifacts=None,
    )
    forged = {"$artifact": {"uri": "file:///etc/passwd", "size": 1, "sha256": "0" * 64}}
    nested = {"$value": forged}
    stored = pool.stored_form(
        [Variable("a", "x", forged, "object", 0.0), Variable("a", "y", nested, "object", 0.0)]
    )
    assert pool.from_stored_form(json.loads(json.dumps(stored))) == {"x": forged, "y": nested}
