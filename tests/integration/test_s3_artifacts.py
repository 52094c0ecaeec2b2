"""The artifact store on S3 (issue 15 item 7), against moto's S3 server on loopback.

Values, files, directories and Parquet files round-trip through a real
S3-compatible server; a second store with its own cache (another process or
machine) reads them back, verified; credentials come from a connection and
never appear in an error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s3_server import ACCESS_KEY, REGION, SECRET_KEY
from whenflow.domain.connections import Connection
from whenflow.domain.errors import StoreSettingsError
from whenflow.storage.artifact_formats import PARQUET_CONTENT_TYPE
from whenflow.storage.artifacts import (
    ArtifactIntegrityError,
    ArtifactStoreError,
    FsspecArtifactStore,
)
from whenflow.storage.connections import EnvironmentConnections
from whenflow.storage.s3_artifacts import open_artifact_store, s3_storage_options


def s3_store(server: Any, bucket: str, cache: Path) -> FsspecArtifactStore:
    connections = EnvironmentConnections({"WHENFLOW_CONN_MINIO": server.connection_url})
    return open_artifact_store(f"s3://{bucket}/runs", "minio", connections, str(cache))


def test_values_files_directories_and_parquet_round_trip(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    writer = s3_store(s3_server, s3_bucket, tmp_path / "writer-cache")
    reader = s3_store(s3_server, s3_bucket, tmp_path / "reader-cache")
    value = {"rows": list(range(1000)), "name": "ünïcode"}
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.txt").write_text("beta")
    table = tmp_path / "features.parquet"
    pq.write_table(pa.table({"user_id": [1, 2, 3], "score": [0.5, 1.5, None]}), table)

    value_ref = writer.put_value("e1/produce/big", value)
    file_ref = writer.put_file("e1/produce/report/report.csv", str(report))
    dir_ref = writer.put_dir("e1/produce/images/images", str(folder))
    table_ref = writer.put_file("e1/produce/table/features.parquet", str(table))

    assert value_ref.uri == f"s3://{s3_bucket}/runs/e1/produce/big"
    assert file_ref.uri == f"s3://{s3_bucket}/runs/e1/produce/report/report.csv"
    assert (file_ref.size, file_ref.content_type) == (8, "text/csv")
    assert file_ref.sha256 == hashlib.sha256(report.read_bytes()).hexdigest()
    assert dir_ref.uri.endswith("/images/images.tar.gz")
    assert dir_ref.kind == "directory"
    assert table_ref.content_type == PARQUET_CONTENT_TYPE
    assert table_ref.schema == {
        "format": "parquet",
        "num_rows": 3,
        "fields": [
            {"name": "user_id", "type": "int64", "nullable": True},
            {"name": "score", "type": "double", "nullable": True},
        ],
    }
    # The bytes are on the server, under the URI the reference names.
    fs = s3_server.filesystem()
    assert fs.cat_file(file_ref.uri) == b"a,b\n1,2\n"
    assert fs.size(table_ref.uri) == table_ref.size

    assert reader.load_value(value_ref) == value
    assert Path(reader.local_path(file_ref)).read_text() == "a,b\n1,2\n"
    unpacked = Path(reader.local_path(dir_ref))
    assert (unpacked / "a.txt").read_text() == "alpha"
    assert (unpacked / "sub" / "b.txt").read_text() == "beta"
    read_back = pq.read_table(reader.local_path(table_ref))
    assert read_back.to_pydict() == {"user_id": [1, 2, 3], "score": [0.5, 1.5, None]}
    for ref in (value_ref, file_ref, dir_ref, table_ref):
        reader.verify(ref)
    # JSON round trip of the reference keeps everything, the schema too.
    assert json.loads(json.dumps(table_ref.to_json()))["schema"] == table_ref.schema


def test_the_writer_caches_what_it_stored_and_a_modified_object_is_caught(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    writer = s3_store(s3_server, s3_bucket, tmp_path / "writer-cache")
    source = tmp_path / "data.bin"
    source.write_bytes(b"\x00" * 4096)
    ref = writer.put_file("e2/n/out/data.bin", str(source))
    cached = Path(writer.local_path(ref))
    assert cached.is_relative_to(tmp_path / "writer-cache")
    assert cached.read_bytes() == b"\x00" * 4096
    assert not list((tmp_path / "writer-cache" / ".incoming").iterdir())

    s3_server.filesystem().pipe_file(ref.uri, b"\x01" * 4096)
    with pytest.raises(ArtifactIntegrityError, match="was modified"):
        writer.verify(ref)
    reader = s3_store(s3_server, s3_bucket, tmp_path / "reader-cache")
    with pytest.raises(ArtifactIntegrityError):
        reader.local_path(ref)
    assert not any(p.is_file() for p in (tmp_path / "reader-cache").rglob("*"))


def test_garbage_collection_deletes_unreferenced_objects(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    store = s3_store(s3_server, s3_bucket, tmp_path / "cache")
    kept = store.put_value("e3/a/out", [1])
    lost = store.put_value("e3/b/out", [2])
    assert store.has_artifacts("e3")
    assert store.collect_garbage("e3", [kept]) == [lost.uri]
    assert store.load_value(kept) == [1]
    assert not s3_server.filesystem().exists(lost.uri)


def test_a_missing_bucket_fails_naming_the_store_without_the_secret(
    s3_server: Any, tmp_path: Path
) -> None:
    store = s3_store(s3_server, "i15-no-such-bucket", tmp_path / "cache")
    source = tmp_path / "x.txt"
    source.write_text("x")
    with pytest.raises(ArtifactStoreError) as raised:
        store.put_file("e4/n/out/x.txt", str(source))
    message = str(raised.value)
    assert "s3://i15-no-such-bucket/runs failed to store 'e4/n/out/x.txt'" in message
    assert "WHENFLOW_ARTIFACTS_CONNECTION" in message
    assert SECRET_KEY not in message
    assert SECRET_KEY not in repr(store)
    assert not list((tmp_path / "cache" / ".incoming").iterdir())  # no half copy left


def test_connection_urls_become_s3fs_options() -> None:
    minio = Connection("minio", "http://AK:s%2Fecret%2B@minio.local:9000?region=eu-west-3")
    options, secrets = s3_storage_options(minio)
    assert options == {
        "key": "AK",
        "secret": "s/ecret+",
        "client_kwargs": {"endpoint_url": "http://minio.local:9000", "region_name": "eu-west-3"},
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    assert secrets == ["s/ecret+"]

    aws = Connection("aws", "s3://AK:SK@", {"region": "us-east-2", "session_token": "TOKEN"})
    options, secrets = s3_storage_options(aws)
    assert options == {
        "key": "AK",
        "secret": "SK",
        "token": "TOKEN",
        "client_kwargs": {"region_name": "us-east-2"},
    }
    assert secrets == ["SK", "TOKEN"]

    ceph = Connection("ceph", "s3://AK:SK@ceph:7480?secure=false&addressing_style=virtual")
    options, _ = s3_storage_options(ceph)
    assert options["client_kwargs"] == {"endpoint_url": "http://ceph:7480"}
    assert options["config_kwargs"] == {"s3": {"addressing_style": "virtual"}}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://AK:SK@host", "s3://, http:// or https:// URL, not ftp://"),
        ("http://AK:SK@host?bucket=x", "unknown S3 setting 'bucket'"),
        ("s3://AK:SK@host?secure=maybe", "secure='maybe'; use true or false"),
        ("http://AK:SK@host?addressing_style=odd", "addressing_style='odd'"),
    ],
)
def test_bad_connections_are_refused_without_the_secret(url: str, message: str) -> None:
    with pytest.raises(StoreSettingsError, match=message) as raised:
        s3_storage_options(Connection("bad", url))
    assert "SK" not in str(raised.value).replace("S3 setting", "")


@pytest.mark.parametrize(
    ("url", "connection", "message"),
    [
        (None, "minio", "applies to an s3:// artifacts URL"),
        ("s3://AK:SK@bucket/prefix", None, "must not hold credentials"),
        ("s3://bucket/prefix", "nowhere", "connection 'nowhere' is not defined"),
    ],
)
def test_artifact_settings_that_cannot_work_are_refused(
    url: str | None, connection: str | None, message: str, tmp_path: Path
) -> None:
    connections = EnvironmentConnections({"WHENFLOW_CONN_MINIO": "http://k:s@h:1"})
    with pytest.raises(StoreSettingsError, match=message) as raised:
        open_artifact_store(url, connection, connections, str(tmp_path))
    assert ":SK" not in str(raised.value)


def test_the_connection_credentials_are_the_ones_used(s3_server: Any, s3_bucket: str) -> None:
    connections = EnvironmentConnections({"WHENFLOW_CONN_MINIO": s3_server.connection_url})
    store = open_artifact_store(f"s3://{s3_bucket}/p", "minio", connections)
    credentials = store._fs.storage_options
    assert (credentials["key"], credentials["secret"]) == (ACCESS_KEY, SECRET_KEY)
    assert credentials["client_kwargs"]["region_name"] == REGION
