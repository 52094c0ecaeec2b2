"""The artifact store: large values and files, kept outside the variable table.

`FsspecArtifactStore` implements the engine's `ArtifactStore` port over any
fsspec filesystem: a local folder by default (`$WHENFLOW_HOME/artifacts`),
`s3://`, `memory://` or another fsspec URL once its package is installed
(`storage/s3_artifacts.py` builds an S3 store from a connection). The pool
keeps only the `ArtifactRef` (URI, size, sha256, content type and, for a
Parquet file, its schema: `artifact_formats.py`).

Streaming: files move in chunks of at most `CHUNK` bytes (a remote write
buffers one multipart part of `_REMOTE_BLOCK` bytes), never whole. A file
stored on a remote root is written to the local cache in the same pass, so
the node that produced it does not download it back.

Trust boundary (DESIGN.md §10): keys come from pipeline data, so a key is
canonicalised and must name a path *under the root*. `..`, absolute paths,
backslashes and, on a local root, symlinks that lead outside it raise
`ArtifactPathError`; a reference read back from the database is checked the
same way before its bytes are touched.

A directory is stored as one `.tar.gz` archive (`kind: directory`); its
`local_path` is the archive unpacked into the cache, with Python's `data`
extraction filter: no absolute paths, no `..`, no links leading outside,
no device files.

On a local root the store is private to its user, whatever the umask:
folders it creates are 0700 and artifact files 0600 (a task's 0640 file does
not become world-readable by being stored).

Integrity: every reference carries the sha256 of the bytes. `load_value`
checks it on every read and `verify` on request (the engine verifies the
files a node reads before the node starts); a remote artifact is checked
when it is downloaded into the cache. A mismatch raises
`ArtifactIntegrityError`, naming the artifact.

`collect_garbage` deletes what an execution wrote that no reference it kept
names: the artifacts of attempts that failed or were lost.

The methods do blocking I/O. The engine copies files and directories from a
worker thread; values over the offload threshold are written from its loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from whenflow.domain.errors import StoreSettingsError, WhenflowError
from whenflow.domain.variables import ArtifactRef
from whenflow.storage.artifact_formats import PARQUET_CONTENT_TYPE, content_type_of, parquet_schema
from whenflow.storage.artifact_keys import (
    CHUNK,
    ArtifactIntegrityError,
    ArtifactPathError,
    ArtifactStoreError,
    canonical_key,
    checked_component,
    checked_digest,
    sha256_file,
    sha256_stream,
)
from whenflow.storage.private_files import (
    PRIVATE_DIR_MODE,
    make_private_dirs,
    open_private,
)

_REMOTE_BLOCK = 8 << 20  # one S3 multipart part (S3's minimum is 5 MiB)
JSON_CONTENT_TYPE = "application/json"
DIRECTORY_KIND = "directory"
ARCHIVE_SUFFIX = ".tar.gz"
__all__ = [
    "ArtifactIntegrityError",
    "ArtifactPathError",
    "ArtifactStoreError",
    "FsspecArtifactStore",
    "canonical_key",
]
ARTIFACTS_URL_HELP = (
    "set WHENFLOW_ARTIFACTS_URL to a local folder or an fsspec URL such as "
    "s3://bucket/prefix (with its package installed), or unset it"
)


class FsspecArtifactStore:
    """Artifacts under one fsspec root URL (a local folder by default)."""

    def __init__(
        self,
        root_url: str | None = None,
        cache_dir: str | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        """Args:
        root_url: fsspec URL or local path of the root; default `$WHENFLOW_HOME/artifacts`.
        cache_dir: where remote artifacts are downloaded for `local_path`;
            default `$WHENFLOW_HOME/cache/artifacts`.
        storage_options: keyword arguments of the fsspec filesystem (for S3: the
            endpoint, region and credentials, `s3_artifacts.s3_storage_options`).
        secrets: values (credentials) replaced by `***` in every error this store raises.

        Raises StoreSettingsError for a URL whose filesystem cannot be used.
        """
        self._secrets = tuple(s for s in secrets if s)
        if root_url is None:
            from whenflow.storage.database import whenflow_home

            root_url = str(whenflow_home() / "artifacts")
        try:
            fs, root = fsspec.core.url_to_fs(root_url, **dict(storage_options or {}))
        except (ValueError, ImportError, TypeError) as exc:
            scheme = root_url.partition("://")[0] if "://" in root_url else root_url
            raise StoreSettingsError(
                f"cannot use the artifacts URL (scheme {scheme!r}): {self._scrub(exc)}; "
                f"{ARTIFACTS_URL_HELP}"
            ) from None
        self._fs: Any = fs
        self._local = "file" in _protocols(fs)
        if self._local:
            root = os.path.realpath(root)
            try:
                make_private_dirs(root)
            except OSError as exc:
                raise StoreSettingsError(
                    f"cannot create the artifact folder {root!r}: {exc.strerror or exc}; "
                    f"{ARTIFACTS_URL_HELP}"
                ) from exc
        self._root: str = root.rstrip("/") or "/"
        self._cache_dir = cache_dir

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self._uri(self._root)!r})"

    def _scrub(self, error: BaseException | str) -> str:
        text = str(error)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _remote(self, what: str) -> Iterator[None]:
        """Turn a remote filesystem's error into ArtifactStoreError, credentials masked."""
        if self._local:
            yield
            return
        try:
            yield
        except (ArtifactIntegrityError, ArtifactPathError):
            raise
        except Exception as exc:
            raise ArtifactStoreError(
                f"the artifact store {self._uri(self._root)} failed to {what}: "
                f"{type(exc).__name__}: {self._scrub(exc)}"
            ) from None

    @property
    def root(self) -> str:
        """The root path inside the filesystem (a real path for a local root)."""
        return self._root

    def put_value(self, key: str, value: Any) -> ArtifactRef:
        """Store a JSON-serialisable value under `key` as UTF-8 JSON."""
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        path = self._target(key)
        with self._remote(f"store {key!r}"):
            self._write(path, [data])
        return ArtifactRef(
            uri=self._uri(path),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content_type=JSON_CONTENT_TYPE,
            kind="value",
            filename=posixpath.basename(path),
        )

    def put_file(self, key: str, path: str) -> ArtifactRef:
        """Copy the local file `path` into the store under `key`, in chunks.

        A Parquet file's reference carries its schema. On a remote root the
        bytes also go to the local cache in the same pass (`local_path` of
        the new reference then downloads nothing).
        """
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"not a file, cannot store it as an artifact: {path}")
        target = self._target(key)
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as handle:

            def chunks() -> Iterator[bytes]:
                nonlocal size
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk

            with self._remote(f"store {key!r}"):
                copy = self._write(target, chunks(), keep_copy=True)
        content_type = content_type_of(source)
        ref = ArtifactRef(
            uri=self._uri(target),
            size=size,
            sha256=digest.hexdigest(),
            content_type=content_type,
            kind="file",
            filename=source.name,
            schema=parquet_schema(source) if content_type == PARQUET_CONTENT_TYPE else None,
        )
        if copy is not None:
            self._adopt_into_cache(ref, copy)
        return ref

    def put_dir(self, key: str, path: str) -> ArtifactRef:
        """Store the local directory `path` under `key` + `.tar.gz`, as one archive."""
        source = Path(path)
        if not source.is_dir():
            raise NotADirectoryError(f"not a directory, cannot store it as an artifact: {path}")
        with tempfile.TemporaryDirectory(prefix="whenflow-pack-") as scratch:
            archive = Path(scratch) / f"{source.name or 'directory'}{ARCHIVE_SUFFIX}"
            with tarfile.open(archive, "w:gz") as tar:
                for child in sorted(source.iterdir()):
                    tar.add(child, arcname=child.name)
            ref = self.put_file(f"{key}{ARCHIVE_SUFFIX}", str(archive))
        return replace(
            ref, kind=DIRECTORY_KIND, content_type="application/gzip", filename=source.name
        )

    def load_value(self, ref: ArtifactRef) -> Any:
        """The JSON value behind a `value` reference; raises ArtifactIntegrityError."""
        path = self._path_of(ref)
        with self._remote(f"read {ref.uri}"), self._fs.open(path, "rb") as handle:
            data = handle.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.sha256:
            raise ArtifactIntegrityError(ref, actual)
        return json.loads(data)

    def verify(self, ref: ArtifactRef) -> None:
        """Check that the stored bytes still match the reference's sha256.

        Raises ArtifactIntegrityError (modified), or OSError (missing).
        """
        path = self._path_of(ref)
        if self._local:
            actual = sha256_file(Path(path))
        else:
            with (
                self._remote(f"read {ref.uri}"),
                self._fs.open(path, "rb", block_size=_REMOTE_BLOCK) as handle,
            ):
                actual = sha256_stream(handle)
        if actual != ref.sha256:
            raise ArtifactIntegrityError(ref, actual)

    def has_artifacts(self, execution_id: str) -> bool:
        """Whether anything is stored under the execution's prefix."""
        prefix = posixpath.join(self._root, canonical_key(execution_id))
        with self._remote(f"list {execution_id!r}"):
            return bool(self._fs.exists(prefix))

    def collect_garbage(self, execution_id: str, keep: Iterable[ArtifactRef]) -> list[str]:
        """Delete the artifacts of `execution_id` that no reference in `keep` names.

        Call it once the execution has ended: what is left then was written by
        attempts that failed, timed out or were lost. Returns the deleted URIs.
        """
        prefix = posixpath.join(self._root, canonical_key(execution_id))
        with self._remote(f"list {execution_id!r}"):
            return self._delete_unkept(prefix, keep)

    def _delete_unkept(self, prefix: str, keep: Iterable[ArtifactRef]) -> list[str]:
        if not self._fs.exists(prefix):
            return []
        kept = set()
        for ref in keep:
            try:
                kept.add(self._path_of(ref))
            except ArtifactPathError:
                continue  # another root's reference (e.g. a child execution's)
        deleted: list[str] = []
        for path in sorted(self._fs.find(prefix)):
            if path not in kept:
                self._fs.rm_file(path)
                deleted.append(self._uri(path))
        if self._local:
            _remove_empty_dirs(prefix)
        return deleted

    def local_path(self, ref: ArtifactRef) -> str:
        """A local path with the artifact's bytes: the file itself on a local root,
        otherwise a download into the cache (named by sha256, verified). For a
        directory, the archive unpacked into the cache."""
        if ref.kind == DIRECTORY_KIND:
            return self._unpacked(ref)
        return self._local_file(ref)

    def _unpacked(self, ref: ArtifactRef) -> str:
        target = (
            self._cache() / checked_digest(ref) / checked_component(ref.filename or "directory")
        )
        if target.is_dir():
            return str(target)
        archive = self._local_file(replace(ref, filename=(ref.filename or "d") + ARCHIVE_SUFFIX))
        make_private_dirs(str(target.parent))
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        partial.mkdir(mode=PRIVATE_DIR_MODE)  # an empty directory's archive creates nothing
        os.chmod(partial, PRIVATE_DIR_MODE)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(partial, filter="data")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise WhenflowError(
                f"artifact {ref.uri} is not a safe directory archive: {exc}"
            ) from exc
        try:
            os.replace(partial, target)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not target.is_dir():  # else another reader unpacked it first
                raise
        return str(target)

    def _cached(self, ref: ArtifactRef, default_name: str) -> Path:
        """Where the cache keeps `ref`'s bytes: `<cache>/<sha256>/<file name>`."""
        name = checked_component(ref.filename or default_name)
        return self._cache() / checked_digest(ref) / name

    def _cache(self) -> Path:
        return Path(self._cache_dir) if self._cache_dir else _default_cache_dir()

    def _local_file(self, ref: ArtifactRef) -> str:
        path = self._path_of(ref)
        if self._local:
            return path
        cached = self._cached(ref, "artifact")
        if cached.is_file() and sha256_file(cached) == ref.sha256:
            return str(cached)
        make_private_dirs(str(cached.parent))
        partial = cached.with_name(f".{cached.name}.{uuid.uuid4().hex}.part")
        # Read in blocks, hashing as it goes: s3fs's get_file can hold a whole object.
        hashed = hashlib.sha256()
        try:
            with (
                self._remote(f"download {ref.uri}"),
                self._fs.open(path, "rb", block_size=_REMOTE_BLOCK) as source,
                open_private(partial) as out,
            ):
                while chunk := source.read(CHUNK):
                    hashed.update(chunk)
                    out.write(chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        actual = hashed.hexdigest()
        if actual != ref.sha256:
            partial.unlink()
            raise ArtifactIntegrityError(ref, actual)
        os.replace(partial, cached)
        return str(cached)

    def _target(self, key: str) -> str:
        """The checked path inside the filesystem for a new artifact."""
        path = posixpath.join(self._root, canonical_key(key))
        if self._local:
            self._check_local(key, path)
        return path

    def _path_of(self, ref: ArtifactRef) -> str:
        """The checked path behind a reference read back from anywhere."""
        fs_path = self._fs._strip_protocol(ref.uri)
        prefix = self._root.rstrip("/") + "/"
        if not fs_path.startswith(prefix):
            raise ArtifactPathError(ref.uri, f"not under the artifact root {self._root!r}")
        path = posixpath.join(self._root, canonical_key(fs_path[len(prefix) :]))
        if self._local:
            self._check_local(ref.uri, path)
        return path

    def _check_local(self, key: str, path: str) -> None:
        # realpath resolves every symlink already on disk, in the parents and the leaf.
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._root]) != self._root or real == self._root:
            raise ArtifactPathError(key, "it resolves outside the artifact root (symlink?)")

    def _write(self, path: str, chunks: Iterable[bytes], *, keep_copy: bool = False) -> Path | None:
        """Write `chunks` to `path`; on a remote root with `keep_copy`, also to a
        private file in the cache, which is returned (for `_adopt_into_cache`)."""
        parent = posixpath.dirname(path)
        if not self._local:
            copy = None
            if keep_copy:
                incoming = self._cache() / ".incoming"
                make_private_dirs(str(incoming))
                copy = incoming / f"{uuid.uuid4().hex}.part"
            try:
                self._fs.makedirs(parent, exist_ok=True)
                with ExitStack() as files:
                    out = files.enter_context(self._fs.open(path, "wb", block_size=_REMOTE_BLOCK))
                    mirror = files.enter_context(open_private(copy)) if copy else None
                    for chunk in chunks:
                        out.write(chunk)
                        if mirror is not None:
                            mirror.write(chunk)
            except BaseException:
                if copy is not None:
                    copy.unlink(missing_ok=True)
                raise
            return copy
        make_private_dirs(parent)
        # Local: write a sibling temp file, then rename, so readers never see half a file.
        self._check_local(path, parent + "/x")
        partial = f"{path}.{uuid.uuid4().hex}.part"
        try:
            with open_private(partial) as out:
                _copy(chunks, out)
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        return None

    def _adopt_into_cache(self, ref: ArtifactRef, copy: Path) -> None:
        """Move the copy `_write` kept to where `local_path` looks for `ref`."""
        cached = self._cached(ref, "artifact")
        try:
            make_private_dirs(str(cached.parent))
            os.replace(copy, cached)
        except OSError:
            copy.unlink(missing_ok=True)  # local_path downloads it instead

    def _uri(self, path: str) -> str:
        return str(self._fs.unstrip_protocol(path))


def _copy(chunks: Iterable[bytes], out: BinaryIO) -> None:
    for chunk in chunks:
        out.write(chunk)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _remove_empty_dirs(top: str) -> None:
    """Remove the empty folders under `top` (and `top` itself if it ends up empty)."""
    for folder, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(folder)
        except OSError:
            continue  # not empty


def _default_cache_dir() -> Path:
    from whenflow.storage.database import whenflow_home

    cache = whenflow_home() / "cache" / "artifacts"
    make_private_dirs(str(cache))
    return cache
