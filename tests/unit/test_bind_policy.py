"""Without a token the server listens on loopback only, and says why and how otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from auth_app import token_service

from whenflow.domain.auth import Role
from whenflow.services.bind_policy import UnsafeBind, check_bind, check_server_bind, is_loopback

LOOPBACK = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "[::1]",
    "localhost",
    "LOCALHOST",
    "::ffff:127.0.0.1",
    "::1%lo",
]
BEYOND = [
    "0.0.0.0",
    "::",
    "192.168.1.10",
    "10.0.0.1",
    "example.com",
    "localhost.example.com",
    "",
    "::ffff:10.0.0.1",
    "128.0.0.1",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_is_allowed_without_tokens(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, has_tokens=False)


@pytest.mark.parametrize("host", BEYOND)
def test_anything_else_is_refused_without_tokens(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UnsafeBind) as refused:
        check_bind(host, has_tokens=False)
    message = str(refused.value)
    assert "no API token" in message
    assert "whenflow tokens create --role admin" in message
    check_bind(host, has_tokens=True)  # with a token, any address


async def test_the_server_check_reads_the_database(tmp_path: Path) -> None:
    async with token_service(tmp_path) as tokens:
        with pytest.raises(UnsafeBind):
            await check_server_bind("0.0.0.0", tokens)
        await check_server_bind("127.0.0.1", tokens)
        issued = await tokens.create(Role.ADMIN)
        await check_server_bind("0.0.0.0", tokens)
        await tokens.revoke(issued.stored.token_id)
        with pytest.raises(UnsafeBind):  # a revoked token guards nothing
            await check_server_bind("0.0.0.0", tokens)
