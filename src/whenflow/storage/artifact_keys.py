"""Artifact keys, references and integrity: the checks and errors of the artifact store.

Keys come from pipeline data (DESIGN.md §10): `canonical_key` refuses any
key that could leave the root. A reference's file name and sha256 name
places in the local cache, so they are checked too (`checked_component`,
`checked_digest`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from whenflow.domain.errors import WhenflowError
from whenflow.domain.variables import ArtifactRef

CHUNK = 1 << 20
"""Bytes read or written at a time when a file is copied or hashed."""


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


class ArtifactStoreError(WhenflowError):
    """A remote artifact store (S3...) failed: unreachable, refused, missing bucket.

    The message names the store and the cause, credentials masked; check
    WHENFLOW_ARTIFACTS_URL and its connection (docs/artifacts.md).
    """

    def __init__(self, message: str) -> None:
        super().__init__(
            f"{message}; check WHENFLOW_ARTIFACTS_URL and WHENFLOW_ARTIFACTS_CONNECTION"
        )


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


def checked_component(name: str) -> str:
    """A reference's file name as one safe path component (references may come from data)."""
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ArtifactPathError(name, "a file name must be a single path component")
    return name


def checked_digest(ref: ArtifactRef) -> str:
    if len(ref.sha256) != 64 or any(c not in "0123456789abcdef" for c in ref.sha256):
        raise ArtifactPathError(ref.uri, "the reference's sha256 is not a hex digest")
    return ref.sha256


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_stream(handle)


def sha256_stream(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
