"""Stored definitions and their versions: the registry of `whenflow server` (DESIGN.md §11).

A pipeline or a `kind: Task` definition is pushed as a **draft** under
`name@version`, which may be replaced until it is **published**; a published
version is immutable: pushing the same version with another body is a
conflict, with the same body a no-op (a retried push is safe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from whenflow.domain.errors import WhenflowError


class DefinitionKind(StrEnum):
    PIPELINE = "pipeline"
    TASK = "task"


class VersionStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"


@dataclass(frozen=True, slots=True)
class RegistryVersion:
    """One stored version of a definition (without its text); times are unix seconds."""

    kind: DefinitionKind
    name: str
    version: str
    status: VersionStatus
    sha256: str
    description: str
    created_at: float
    updated_at: float
    published_at: float | None = None

    @property
    def ref(self) -> str:
        """`name@version`, as `task: {ref: ...}` and `pipeline: ...` write it."""
        return f"{self.name}@{self.version}"


class VersionConflict(WhenflowError):
    """A published version was pushed again with a different body; publish a new version."""


class NotInRegistry(WhenflowError):
    """The registry has no such definition or version; the message says which."""


class NotADraft(WhenflowError):
    """The operation needs a draft, and this version is published (immutable)."""


# semver.org §2/§9/§10: MAJOR.MINOR.PATCH, optional -pre-release and +build.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def semver_key(version: str) -> SemverKey:
    """A sort key that orders versions by semver.org §11 precedence.

    1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0; build metadata is ignored.
    Hand-written (a dozen lines) rather than a dependency: `packaging.version`
    follows PEP 440, whose pre-release order differs from semver's.

    Raises:
        ValueError: `version` is not a semantic version.
    """
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    # Numeric identifiers sort before alphanumeric ones, each in its own order.
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, parts)
