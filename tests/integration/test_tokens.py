"""API tokens on real SQLite and PostgreSQL: hashed at rest, shown once, revocable."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.auth import Role, TokenNotFound
from whenflow.services.tokens import TOUCH_INTERVAL_S, TokenService


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
async def no_tokens(engine: AsyncEngine) -> None:
    """The PostgreSQL database is shared by the session's tests: start each without tokens."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM api_tokens"))


async def stored_rows(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT * FROM api_tokens"))
        return [dict(r._mapping) for r in result]


async def test_create_stores_only_the_hash_and_authenticates_the_role(
    engine: AsyncEngine,
) -> None:
    service = TokenService(engine)
    issued = await service.create(Role.OPERATOR, "deploy bot")
    assert issued.token.startswith("wf_")
    assert len(issued.token) == len("wf_") + 43  # 32 random bytes, URL-safe base64
    rows = await stored_rows(engine)
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token not in {str(v) for v in rows[0].values()}
    assert rows[0]["role"] == "operator"
    assert rows[0]["name"] == "deploy bot"

    assert await service.authenticate(issued.token) is Role.OPERATOR
    assert await service.authenticate(issued.token + "x") is None
    assert await service.authenticate(issued.token[3:]) is None  # no prefix
    assert await service.authenticate("wf_" + "A" * 43) is None
    assert await service.authenticate("") is None


async def test_two_tokens_differ_and_list_never_shows_the_text(engine: AsyncEngine) -> None:
    service = TokenService(engine)
    first = await service.create(Role.VIEWER, "a")
    second = await service.create(Role.ADMIN)
    assert first.token != second.token
    listed = await service.list()
    assert [t.token_id for t in listed] == [first.stored.token_id, second.stored.token_id]
    assert [t.role for t in listed] == [Role.VIEWER, Role.ADMIN]
    text = repr(listed) + repr([t.to_json() for t in listed])
    assert first.token not in text
    assert second.token not in text
    assert await service.authenticate(second.token) is Role.ADMIN


async def test_revoke_stops_the_token_at_once_and_is_idempotent(engine: AsyncEngine) -> None:
    service = TokenService(engine)
    kept = await service.create(Role.VIEWER, "kept")
    gone = await service.create(Role.ADMIN, "gone")
    assert await service.has_tokens()
    revoked = await service.revoke(gone.stored.token_id[:8])  # a unique prefix
    assert revoked.token_id == gone.stored.token_id
    assert revoked.revoked_at is not None
    assert await service.authenticate(gone.token) is None
    assert await service.authenticate(kept.token) is Role.VIEWER
    again = await service.revoke(gone.stored.token_id)
    assert again.revoked_at == revoked.revoked_at
    await service.revoke(kept.stored.token_id)
    assert not await service.has_tokens()  # revoked tokens do not count
    with pytest.raises(TokenNotFound, match="tokens list"):
        await service.revoke("no-such-id")
    with pytest.raises(TokenNotFound, match="no token has the id ''"):
        await service.revoke("")  # matches nothing rather than everything
    assert len(await service.list()) == 2


async def test_last_used_is_written_at_most_once_a_minute(engine: AsyncEngine) -> None:
    clock = Clock()
    service = TokenService(engine, clock=clock, cache_s=0)  # every call reads the database
    issued = await service.create(Role.VIEWER)
    assert (await service.list())[0].last_used_at is None
    await service.authenticate(issued.token)
    assert (await service.list())[0].last_used_at == clock.now
    first_use = clock.now
    clock.now += TOUCH_INTERVAL_S / 2
    await service.authenticate(issued.token)
    assert (await service.list())[0].last_used_at == first_use  # no write within the minute
    clock.now += TOUCH_INTERVAL_S
    await service.authenticate(issued.token)
    assert (await service.list())[0].last_used_at == clock.now


async def test_has_tokens_sees_its_own_changes_at_once(engine: AsyncEngine) -> None:
    service = TokenService(engine)
    assert not await service.has_tokens()
    issued = await service.create(Role.ADMIN)
    assert await service.has_tokens()
    other = TokenService(engine)  # another process's view: reads the table
    assert await other.has_tokens()
    await service.revoke(issued.stored.token_id)
    assert not await service.has_tokens()


async def test_a_valid_token_is_remembered_for_the_cache_time(engine: AsyncEngine) -> None:
    server = TokenService(engine, cache_s=3600)
    cli = TokenService(engine)  # another process: the CLI
    issued = await cli.create(Role.OPERATOR)
    assert await server.authenticate(issued.token) is Role.OPERATOR
    await cli.revoke(issued.stored.token_id)
    # The documented price of the cache: another process's revoke waits for it.
    assert await server.authenticate(issued.token) is Role.OPERATOR
    assert await TokenService(engine, cache_s=0).authenticate(issued.token) is None
    again = await server.create(Role.VIEWER)  # a change through this service forgets
    assert await server.authenticate(issued.token) is None
    assert await server.authenticate(again.token) is Role.VIEWER
