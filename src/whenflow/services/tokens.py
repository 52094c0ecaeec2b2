"""API tokens: create, list, revoke, and authenticate bearer tokens (DESIGN.md §10, §11).

A token is `wf_` followed by 43 URL-safe characters (32 random bytes from
`secrets`). Its text is shown once, when it is created; the store keeps only
its SHA-256 hex digest, so a copy of the database gives nobody a token.

`authenticate` is one indexed read by digest (the digest of a guess tells an
attacker nothing about the stored ones, so the lookup leaks nothing through
its timing; the stored digest is then compared with `hmac.compare_digest`).
It writes `last_used_at` at most once a minute per token, and remembers a
valid token for `CACHE_TTL_S` (1 s), so a busy client costs one read a second
(measured on SQLite: a lookup is ~1.8 ms through aiosqlite, a remembered
token a dictionary read). The price: a token revoked by *another* process
(the CLI) is refused within that second; revoking through this service
forgets it at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from whenflow.domain.auth import (
    TOKEN_PREFIX,
    ApiToken,
    IssuedToken,
    Role,
    TokenNotFound,
)
from whenflow.domain.errors import StoreError
from whenflow.services.settings import Settings
from whenflow.storage import tokens as rows
from whenflow.storage.database import make_engine, upgrade

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

TOUCH_INTERVAL_S = 60.0
"""`last_used_at` is rewritten only when it is older than this (seconds)."""
HAS_TOKENS_TTL_S = 1.0
"""How long `has_tokens` trusts its last answer (seconds): a token created by
another process takes effect within this; this process's own changes at once."""
CACHE_TTL_S = 1.0
"""How long a valid token is remembered without reading the database (seconds)."""
CACHE_MAX_ENTRIES = 4096
MAX_TOKEN_CHARS = 256
MAX_NAME_CHARS = 200
_log = logging.getLogger(__name__)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest stored for a token's text."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    """The tokens in one database; `engine` is the server's (or the CLI's) database."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], float] = time.time,
        cache_s: float = CACHE_TTL_S,
    ) -> None:
        """`clock` gives the stored times (Unix seconds); `cache_s` is how long a
        valid token is remembered (0: read the database on every request)."""
        self._engine = engine
        self._clock = clock
        self._cache_s = cache_s
        self._has_tokens: tuple[bool, float] | None = None
        self._known: dict[str, tuple[Role, str, float]] = {}
        """Valid tokens by digest: their role, name and when (monotonic) they were read."""

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings | None = None) -> AsyncIterator[TokenService]:
        """The service over the database `settings` name (default: the environment's),
        migrated to the newest schema; the engine is disposed on exit.

        Raises:
            StoreSettingsError: the database URL is unusable or unreachable.
        """
        settings = settings or Settings.from_env()
        engine = make_engine(settings.database_url, durability=settings.durability)
        try:
            await upgrade(engine)
            yield cls(engine)
        finally:
            await engine.dispose()

    async def create(self, role: Role, name: str = "") -> IssuedToken:
        """A new token holding `role`; its text is in the result and nowhere else.

        `name` says whose or what for (at most 200 characters, kept as given).
        """
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        stored = ApiToken(str(uuid.uuid4()), name.strip()[:MAX_NAME_CHARS], role, self._clock())
        async with self._writing() as conn:
            await rows.insert(conn, stored, token_digest(token))
        self._forget()
        return IssuedToken(token, stored)

    async def list(self) -> list[ApiToken]:
        """Every token, revoked ones included, oldest first; never their text."""
        async with self._reading() as conn:
            return await rows.all_tokens(conn)

    async def revoke(self, id_or_prefix: str) -> ApiToken:
        """Revoke the token with that id (or unique id prefix); it stops working at once.

        Revoking a revoked token returns it unchanged.

        Raises:
            TokenNotFound: no token, or several, match.
        """
        token = await self._resolve(id_or_prefix)
        async with self._writing() as conn:
            await rows.revoke(conn, token.token_id, self._clock())
        self._forget()
        return next(t for t in await self.list() if t.token_id == token.token_id)

    async def authenticate(self, token: str) -> Role | None:
        """The role `token` holds, or None if it is unknown, revoked or malformed.

        Raises:
            StoreError: the database cannot be read.
        """
        found = await self.caller(token)
        return None if found is None else found[0]

    async def caller(self, token: str) -> tuple[Role, str] | None:
        """(role, name) of `token`, or None if it is unknown, revoked or malformed.

        Raises:
            StoreError: the database cannot be read.
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = token_digest(token)
        known = self._known.get(digest)
        if known is not None and time.monotonic() - known[2] < self._cache_s:
            return known[0], known[1]
        async with self._reading() as conn:
            found = await rows.find_by_hash(conn, digest)
        if found is None:
            return None
        stored, stored_digest = found
        if not hmac.compare_digest(stored_digest, digest) or not stored.active:
            return None
        now = self._clock()
        if stored.last_used_at is None or now - stored.last_used_at >= TOUCH_INTERVAL_S:
            await self._touch(stored.token_id, now)
        if self._cache_s > 0:
            if len(self._known) >= CACHE_MAX_ENTRIES:
                self._known.clear()
            self._known[digest] = (stored.role, stored.name, time.monotonic())
        return stored.role, stored.name

    async def has_tokens(self) -> bool:
        """Whether any token is active (not revoked); cached for `HAS_TOKENS_TTL_S`.

        Raises:
            StoreError: the database cannot be read.
        """
        now = time.monotonic()
        if self._has_tokens is not None and now - self._has_tokens[1] < HAS_TOKENS_TTL_S:
            return self._has_tokens[0]
        async with self._reading() as conn:
            answer = await rows.any_active(conn)
        self._has_tokens = (answer, now)
        return answer

    def _forget(self) -> None:
        """After this process changes a token: read the database again."""
        self._has_tokens = None
        self._known.clear()

    async def _touch(self, token_id: str, now: float) -> None:
        """Best effort: a busy database must not turn a valid token away."""
        try:
            async with self._engine.begin() as conn:
                await rows.touch(conn, token_id, now)
        except (SQLAlchemyError, OSError) as exc:
            _log.warning("could not record the use of token %s: %s", token_id, exc)

    async def _resolve(self, id_or_prefix: str) -> ApiToken:
        wanted = id_or_prefix.strip()
        found = await self.list()
        exact = [t for t in found if t.token_id == wanted]
        matches = exact or ([t for t in found if t.token_id.startswith(wanted)] if wanted else [])
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise TokenNotFound(
                f"no token has the id {wanted!r}; `whenflow tokens list` shows their ids"
            )
        raise TokenNotFound(
            f"{len(matches)} tokens have ids starting with {wanted!r}; give more of the id"
        )

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot read the API tokens: {_reason(exc)}") from exc

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot write the API tokens: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
