"""The store's files: private modes whatever the umask, integrity checks, garbage, settings."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from whenflow.domain.errors import StoreSettingsError
from whenflow.storage.artifacts import ArtifactIntegrityError, FsspecArtifactStore
from whenflow.storage.database import make_engine, upgrade


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask, so every mode checked below is whenflow's own choice."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.usefixtures("open_umask")
async def test_sqlite_database_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "db" / "whenflow.db"
    path.parent.mkdir()
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            await connection.execute(sa.text("CREATE TABLE probe (x INTEGER)"))
            await connection.execute(sa.text("INSERT INTO probe VALUES (1)"))
            await connection.commit()
            # While a connection is open, WAL mode keeps its two side files.
            files = {p.name: oct(_mode(p)) for p in path.parent.iterdir()}
    finally:
        await engine.dispose()

    assert files == {
        "whenflow.db": "0o600",
        "whenflow.db-wal": "0o600",
        "whenflow.db-shm": "0o600",
    }


@pytest.mark.usefixtures("open_umask")
def test_artifacts_are_private_files_in_private_folders(tmp_path: Path) -> None:
    source = tmp_path / "shadow"
    source.write_text("root:x\n")
    source.chmod(0o640)
    store = FsspecArtifactStore(str(tmp_path / "new" / "artifacts"))

    file_ref = store.put_file("e1/node/out/shadow", str(source))
    value_ref = store.put_value("e1/node/big", {"rows": list(range(10))})

    for ref in (file_ref, value_ref):
        path = Path(store.local_path(ref))
        assert oct(_mode(path)) == "0o600"
        folder = path.parent
        while folder != tmp_path:
            assert oct(_mode(folder)) == "0o700", folder
            folder = folder.parent


def test_load_value_and_verify_refuse_modified_bytes(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    source = tmp_path / "report.csv"
    source.write_text("a,b\n1,2\n")
    file_ref = store.put_file("e1/n/report/report.csv", str(source))
    value_ref = store.put_value("e1/n/big", {"k": "v"})
    store.verify(file_ref)
    assert store.load_value(value_ref) == {"k": "v"}

    Path(store.local_path(file_ref)).write_text("a,b\n1,3\n")
    Path(store.local_path(value_ref)).write_text(json.dumps({"k": "w"}))

    with pytest.raises(ArtifactIntegrityError, match=r"artifact file://.*report\.csv was modified"):
        store.verify(file_ref)
    with pytest.raises(ArtifactIntegrityError, match=r"artifact file://.*big was modified"):
        store.load_value(value_ref)


def test_a_remote_copy_is_verified_on_download(tmp_path: Path) -> None:
    store = FsspecArtifactStore("memory://whenflow-integrity", cache_dir=str(tmp_path / "cache"))
    source = tmp_path / "data.bin"
    source.write_bytes(b"\x00" * 100)
    ref = store.put_file("e2/n/out/data.bin", str(source))
    with store._fs.open(store._path_of(ref), "wb") as out:
        out.write(b"\x01" * 100)
    # Another process (its own cache) downloads the modified bytes.
    reader = FsspecArtifactStore("memory://whenflow-integrity", cache_dir=str(tmp_path / "other"))

    with pytest.raises(ArtifactIntegrityError):
        reader.local_path(ref)
    with pytest.raises(ArtifactIntegrityError):
        store.verify(ref)
    # The writer's own copy was cached as it was stored, from the original bytes.
    assert Path(store.local_path(ref)).read_bytes() == b"\x00" * 100


def test_collect_garbage_keeps_only_what_the_references_name(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    source = tmp_path / "f.txt"
    source.write_text("x")
    kept = store.put_file("e3/a/out/f.txt", str(source))
    store.put_file("e3/b/out/f.txt", str(source))
    store.put_value("e3/c/0/big", [1, 2])
    other = store.put_file("e4/a/out/f.txt", str(source))

    deleted = store.collect_garbage("e3", [kept, other])

    assert sorted(d.rsplit("/e3/", 1)[1] for d in deleted) == ["b/out/f.txt", "c/0/big"]
    remaining = sorted(
        str(p.relative_to(store.root)) for p in Path(store.root).rglob("*") if p.is_file()
    )
    assert remaining == ["e3/a/out/f.txt", "e4/a/out/f.txt"]
    assert not (Path(store.root) / "e3" / "b").exists()  # empty folders go too
    assert store.collect_garbage("e5", []) == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("bogus://bucket/prefix", "scheme 'bogus'"),
        ("nosuchproto::file:///tmp/x", "nosuchproto"),
    ],
)
def test_an_unknown_artifacts_scheme_is_a_settings_error(url: str, says: str) -> None:
    with pytest.raises(StoreSettingsError, match="WHENFLOW_ARTIFACTS_URL") as raised:
        FsspecArtifactStore(url)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("::::", "not a URL whenflow can parse"),
        ("oracle://scott:tiger@host/db", "unsupported database URL"),
        ("sqlite:///TMP/plain.db", "asyncio driver"),
        ("sqlite+aiosqlite:///TMP/missing/folder/plain.db", "does not exist"),
    ],
)
def test_a_bad_database_url_is_a_settings_error(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(StoreSettingsError, match="WHENFLOW_DATABASE_URL") as raised:
        make_engine(url.replace("TMP", str(tmp_path)))
    assert says in str(raised.value)
    assert "tiger" not in str(raised.value)
    assert list(tmp_path.rglob("*")) == []  # a refused URL creates nothing


async def test_an_unreachable_postgresql_is_a_settings_error() -> None:
    engine = make_engine("postgresql+asyncpg://whenflow:tiger@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreSettingsError, match="cannot connect to the database") as raised:
            await upgrade(engine)
    finally:
        await engine.dispose()
    assert "tiger" not in str(raised.value)
    assert "WHENFLOW_DATABASE_URL" in str(raised.value)
