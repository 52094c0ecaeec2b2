"""Where a server may listen: beyond loopback only with auth configured (DESIGN.md §10).

A server with no active token admits every request as admin (api/auth.py), so
it must be reachable from this machine only: `check_bind` refuses any other
address until `whenflow tokens create --role admin` has made a token.
"""

from __future__ import annotations

import ipaddress

from whenflow.domain.errors import WhenflowError
from whenflow.services.tokens import TokenService

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


class UnsafeBind(WhenflowError):
    """The server was asked to listen beyond loopback with no token to guard it."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) names this machine only.

    127.0.0.0/8, ::1 (also in brackets, or IPv4-mapped), and `localhost` are;
    everything else is not, `0.0.0.0`, `::` and any other name included (a name
    is not resolved: what it resolves to can change).
    """
    text = host.strip().lower()
    if text in LOOPBACK_NAMES:
        return True
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0]  # an IPv6 zone (`::1%lo`) does not change the address
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_bind(host: str, has_tokens: bool) -> None:
    """Allow listening on `host`, or raise UnsafeBind saying why and what to do.

    Raises:
        UnsafeBind: `host` is not loopback and no token exists.
    """
    if has_tokens or is_loopback(host):
        return
    raise UnsafeBind(
        f"refusing to listen on {host!r}: this server has no API token, so every request "
        "would be admitted as admin. Create one first with "
        "`whenflow tokens create --role admin` (the server then asks every request for "
        "a token), or listen on loopback only (--host 127.0.0.1)"
    )


async def check_server_bind(host: str, tokens: TokenService) -> None:
    """`check_bind` against the tokens in the server's database.

    Raises:
        UnsafeBind: `host` is not loopback and the database holds no active token.
        StoreError: the database cannot be read.
    """
    check_bind(host, await tokens.has_tokens())
