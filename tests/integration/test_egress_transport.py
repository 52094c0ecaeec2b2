"""The guarded transport: one resolution per connection, every address checked, the socket
opened to the checked address (so DNS cannot change it between check and connect).

The names below (`*.rebind.test`) exist only in the resolver the test hands the
transport: the system resolver knows none of them, so a request that succeeds
proves the socket went to the address the policy checked, not to a second lookup.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from loopback_http import LoopbackServer, serve
from whenflow.executors.egress import guarded_client, send_following
from whenflow.executors.egress_policy import EgressPolicy
from whenflow.executors.http_errors import EgressDenied


class Zone:
    """A resolver over fixed answers that counts its lookups; a second answer can differ."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        self.lookups.append(host)
        rounds = self.answers[host]
        addresses = rounds[min(len(self.lookups), len(rounds)) - 1]
        family = socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as running:
        yield running


async def get(url: str, policy: EgressPolicy, zone: Zone) -> httpx.Response:
    async with guarded_client(policy, "http", 5.0, resolver=zone) as client:
        response = await send_following(client, client.build_request("GET", url), max_redirects=3)
        await response.aread()
        await response.aclose()
        return response


async def test_the_socket_goes_to_the_checked_address(server: LoopbackServer) -> None:
    # First answer 127.0.0.1 (allowed by network), any later one 10.0.0.1: only one lookup happens.
    zone = Zone({"api.rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    allowed = EgressPolicy.from_entries(["127.0.0.1"])
    response = await get(f"http://api.rebind.test:{server.port}/echo", allowed, zone)
    assert response.status_code == 200
    assert response.json()["headers"]["host"] == f"api.rebind.test:{server.port}"
    assert zone.lookups == ["api.rebind.test"]


async def test_one_denied_address_among_several_refuses_the_name() -> None:
    zone = Zone({"mixed.rebind.test": [["93.184.216.34", "169.254.169.254"]]})
    with pytest.raises(EgressDenied, match=r"mixed.rebind.test \(169.254.169.254\)"):
        await get("http://mixed.rebind.test/", EgressPolicy(), zone)


async def test_a_redirect_is_resolved_and_checked_again(server: LoopbackServer) -> None:
    zone = Zone(
        {
            "start.rebind.test": [["127.0.0.1"]],
            "inside.rebind.test": [["192.168.10.20"]],
        }
    )
    policy = EgressPolicy.from_entries(["start.rebind.test"])
    url = f"http://start.rebind.test:{server.port}/redirect?to=http://inside.rebind.test/admin"
    with pytest.raises(EgressDenied, match="private"):
        await get(url, policy, zone)
    assert zone.lookups == ["start.rebind.test", "inside.rebind.test"]
    assert server.paths() == ["/redirect"]
