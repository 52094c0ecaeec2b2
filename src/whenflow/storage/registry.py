"""The registry table: stored versions of pipelines and `kind: Task` definitions.

The caller owns the transaction: every function takes an open `AsyncConnection`
(`services/registry.py` decides what one push or publish commits together).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from whenflow.domain.registry import DefinitionKind, RegistryVersion, VersionStatus
from whenflow.storage import tables

_T = tables.registry_versions
_COLUMNS = (
    _T.c.kind,
    _T.c.name,
    _T.c.version,
    _T.c.status,
    _T.c.sha256,
    _T.c.description,
    _T.c.created_at,
    _T.c.updated_at,
    _T.c.published_at,
)


def _row(m: sa.RowMapping) -> RegistryVersion:
    return RegistryVersion(
        kind=DefinitionKind(m["kind"]),
        name=m["name"],
        version=m["version"],
        status=VersionStatus(m["status"]),
        sha256=m["sha256"],
        description=m["description"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        published_at=m["published_at"],
    )


def _key(kind: DefinitionKind, name: str, version: str) -> sa.ColumnElement[bool]:
    return sa.and_(_T.c.kind == kind.value, _T.c.name == name, _T.c.version == version)


async def find(
    conn: AsyncConnection, kind: DefinitionKind, name: str, version: str
) -> tuple[RegistryVersion, str] | None:
    """One version and its definition text, or None."""
    row = (
        await conn.execute(
            sa.select(*_COLUMNS, _T.c.definition_text).where(_key(kind, name, version))
        )
    ).first()
    if row is None:
        return None
    return _row(row._mapping), row._mapping["definition_text"]


async def insert(conn: AsyncConnection, entry: RegistryVersion, text: str) -> None:
    """Add a new version; raises sqlalchemy's IntegrityError if it exists already."""
    await conn.execute(
        sa.insert(_T).values(
            kind=entry.kind.value,
            name=entry.name,
            version=entry.version,
            status=entry.status.value,
            definition_text=text,
            sha256=entry.sha256,
            description=entry.description,
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            published_at=entry.published_at,
        )
    )


async def replace_draft(conn: AsyncConnection, entry: RegistryVersion, text: str) -> bool:
    """Overwrite a draft's body; False if the version is not (or no longer) a draft."""
    result = await conn.execute(
        sa.update(_T)
        .where(_key(entry.kind, entry.name, entry.version), _T.c.status == "draft")
        .values(
            definition_text=text,
            sha256=entry.sha256,
            description=entry.description,
            updated_at=entry.updated_at,
        )
    )
    return result.rowcount == 1


async def publish(
    conn: AsyncConnection, kind: DefinitionKind, name: str, version: str, now: float
) -> bool:
    """Draft → published, at most once: False if it was not a draft."""
    result = await conn.execute(
        sa.update(_T)
        .where(_key(kind, name, version), _T.c.status == VersionStatus.DRAFT.value)
        .values(status=VersionStatus.PUBLISHED.value, published_at=now, updated_at=now)
    )
    return result.rowcount == 1


async def delete_draft(
    conn: AsyncConnection, kind: DefinitionKind, name: str, version: str
) -> bool:
    """Delete a draft; False if there is no such draft (published versions stay)."""
    result = await conn.execute(
        sa.delete(_T).where(_key(kind, name, version), _T.c.status == VersionStatus.DRAFT.value)
    )
    return result.rowcount == 1


async def versions(
    conn: AsyncConnection, kind: DefinitionKind, name: str | None = None
) -> list[RegistryVersion]:
    """Every version of one definition, or of all of this kind (unordered)."""
    query = sa.select(*_COLUMNS).where(_T.c.kind == kind.value)
    if name is not None:
        query = query.where(_T.c.name == name)
    return [_row(r) for r in (await conn.execute(query)).mappings()]


async def published_texts(conn: AsyncConnection, kind: DefinitionKind) -> list[tuple[str, str]]:
    """(`name@version`, definition text) of every published version of this kind."""
    rows = await conn.execute(
        sa.select(_T.c.name, _T.c.version, _T.c.definition_text).where(
            _T.c.kind == kind.value, _T.c.status == VersionStatus.PUBLISHED.value
        )
    )
    return [(f"{r.name}@{r.version}", r.definition_text) for r in rows]
