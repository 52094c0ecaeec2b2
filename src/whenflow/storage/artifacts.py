"""The artifact store: large values and files, kept outside the variable table.

`FsspecArtifactStore` implements the engine's `ArtifactStore` port over any
fsspec filesystem: a local folder by default (`$WHENFLOW_HOME/artifacts`),
`s3://`, `memory://` or another fsspec URL once its package is installed.
The pool keeps only the `ArtifactRef` (URI, size, sha256, content type).

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
import mimetypes
import os
import posixpath
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from whenflow.domain.errors import StoreSettingsError, WhenflowError
from whenflow.domain.variables import ArtifactRef
from whenflow.storage.private_files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    make_private_dirs,
    open_private,
)

_CHUNK = 1 << 20
JSON_CONTENT_TYPE = "application/json"
DIRECTORY_KIND = "directory"
ARCHIVE_SUFFIX = ".tar.gz"
ARTIFACTS_URL_HELP = (
    "set WHENFLOW_ARTIFACTS_URL to a local folder or an fsspec URL such as "
    "s3://bucket/prefix (with its package installed), or unset it"
)


class ArtifactIntegrityError(WhenflowError):
    """An artifact's bytes no longer match the sha256 of its reference: it was modified.

    Whatever read it fails; rerun the node that produced it (or restore the file).
    """

    def __init__(self, ref: ArtifactRef, actual: str) -> None:
        super().__init__(
            f"artifact {ref.uri} was modified after it was stored: its sha256 is "
            f"{actual[:12]}..., its reference says {ref.sha256[:12]}...; rerun the node "
            "that produced it"
        )
        self.uri = ref.uri


class ArtifactPathError(WhenflowError):
    """An artifact key or reference points outside the artifact root; use a relative key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"artifact key {key!r} rejected: {reason}")
        self.key = key
        self.reason = reason


def canonical_key(key: str) -> str:
    """`key` as a normalised relative POSIX path, or ArtifactPathError.

    `a//b/./c` becomes `a/b/c`; empty keys, absolute keys, drive letters,
    backslashes, NUL bytes and any `..` component are rejected outright
    rather than resolved, so a key can never climb out of the root.
    """
    if not key or not key.strip():
        raise ArtifactPathError(key, "empty key")
    if "\x00" in key or "\\" in key:
        raise ArtifactPathError(key, "NUL bytes and backslashes are not allowed")
    if key.startswith("/") or "://" in key or (len(key) > 1 and key[1] == ":"):
        raise ArtifactPathError(key, "absolute keys are not allowed")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactPathError(key, "'..' is not allowed")
    if not parts:
        raise ArtifactPathError(key, "the key names the root itself")
    return "/".join(parts)


class FsspecArtifactStore:
    """Artifacts under one fsspec root URL (a local folder by default)."""

    def __init__(self, root_url: str | None = None, cache_dir: str | None = None) -> None:
        """Args:
        root_url: fsspec URL or local path of the root; default `$WHENFLOW_HOME/artifacts`.
        cache_dir: where remote artifacts are downloaded for `local_path`;
            default `$WHENFLOW_HOME/cache/artifacts`.
        """
        if root_url is None:
            from whenflow.storage.database import whenflow_home

            root_url = str(whenflow_home() / "artifacts")
        try:
            fs, root = fsspec.core.url_to_fs(root_url)
        except (ValueError, ImportError) as exc:
            scheme = root_url.partition("://")[0] if "://" in root_url else root_url
            raise StoreSettingsError(
                f"cannot use the artifacts URL (scheme {scheme!r}): {exc}; {ARTIFACTS_URL_HELP}"
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

    @property
    def root(self) -> str:
        """The root path inside the filesystem (a real path for a local root)."""
        return self._root

    def put_value(self, key: str, value: Any) -> ArtifactRef:
        """Store a JSON-serialisable value under `key` as UTF-8 JSON."""
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        path = self._target(key)
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
        """Copy the local file `path` into the store under `key`."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"not a file, cannot store it as an artifact: {path}")
        target = self._target(key)
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as handle:

            def chunks() -> Iterator[bytes]:
                nonlocal size
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk

            self._write(target, chunks())
        content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        return ArtifactRef(
            uri=self._uri(target),
            size=size,
            sha256=digest.hexdigest(),
            content_type=content_type,
            kind="file",
            filename=source.name,
        )

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
        with self._fs.open(self._path_of(ref), "rb") as handle:
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
            actual = _sha256_file(Path(path))
        else:
            with self._fs.open(path, "rb") as handle:
                actual = _sha256_stream(handle)
        if actual != ref.sha256:
            raise ArtifactIntegrityError(ref, actual)

    def has_artifacts(self, execution_id: str) -> bool:
        """Whether anything is stored under the execution's prefix."""
        return bool(self._fs.exists(posixpath.join(self._root, canonical_key(execution_id))))

    def collect_garbage(self, execution_id: str, keep: Iterable[ArtifactRef]) -> list[str]:
        """Delete the artifacts of `execution_id` that no reference in `keep` names.

        Call it once the execution has ended: what is left then was written by
        attempts that failed, timed out or were lost. Returns the deleted URIs.
        """
        prefix = posixpath.join(self._root, canonical_key(execution_id))
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
        target = self._cache() / _digest(ref) / _component(ref.filename or "directory")
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

    def _cache(self) -> Path:
        return Path(self._cache_dir) if self._cache_dir else _default_cache_dir()

    def _local_file(self, ref: ArtifactRef) -> str:
        path = self._path_of(ref)
        if self._local:
            return path
        cached = self._cache() / _digest(ref) / _component(ref.filename or "artifact")
        if cached.is_file() and _sha256_file(cached) == ref.sha256:
            return str(cached)
        make_private_dirs(str(cached.parent))
        partial = cached.with_name(f".{cached.name}.{uuid.uuid4().hex}.part")
        self._fs.get_file(path, str(partial))
        os.chmod(partial, PRIVATE_FILE_MODE)
        actual = _sha256_file(partial)
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

    def _write(self, path: str, chunks: Iterable[bytes]) -> None:
        parent = posixpath.dirname(path)
        if not self._local:
            self._fs.makedirs(parent, exist_ok=True)
            with self._fs.open(path, "wb") as out:
                _copy(chunks, out)
            return
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

    def _uri(self, path: str) -> str:
        return str(self._fs.unstrip_protocol(path))


def _component(name: str) -> str:
    """A reference's file name as one safe path component (references may come from data)."""
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ArtifactPathError(name, "a file name must be a single path component")
    return name


def _digest(ref: ArtifactRef) -> str:
    if len(ref.sha256) != 64 or any(c not in "0123456789abcdef" for c in ref.sha256):
        raise ArtifactPathError(ref.uri, "the reference's sha256 is not a hex digest")
    return ref.sha256


def _copy(chunks: Iterable[bytes], out: BinaryIO) -> None:
    for chunk in chunks:
        out.write(chunk)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return _sha256_stream(handle)


def _sha256_stream(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


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
