"""The egress policy's address classes and `allowHosts` entries (DESIGN.md §10)."""

from __future__ import annotations

import ipaddress

import pytest

from whenflow.executors.egress_policy import EgressPolicy, denied_reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "non-global (reserved or shared)"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
def test_internal_addresses_are_denied(address: str, reason: str) -> None:
    assert denied_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert denied_reason(ipaddress.ip_address(address)) is None


def test_allow_hosts_entries() -> None:
    policy = EgressPolicy.from_entries(
        ["Internal.Example", "*.corp.example", "10.1.0.0/16", "[::1]", "192.168.1.7"]
    )
    loop6 = ipaddress.ip_address("::1")
    ten = ipaddress.ip_address("10.1.2.3")
    assert policy.refusal("internal.example", ten) is None
    assert policy.refusal("internal.example.", ten) is None
    assert policy.refusal("db.corp.example", ten) is None
    assert policy.refusal("corp.example", ipaddress.ip_address("10.9.0.1")) == "private"
    assert policy.refusal("anything", ten) is None  # in 10.1.0.0/16
    assert policy.refusal("anything", ipaddress.ip_address("10.2.0.1")) == "private"
    assert policy.refusal("anything", loop6) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert policy.refusal("x", ipaddress.ip_address("192.168.1.7")) is None
    merged = EgressPolicy().merged(EgressPolicy.from_entries(["localhost"]))
    assert merged.refusal("localhost", ipaddress.ip_address("127.0.0.1")) is None


@pytest.mark.parametrize("entry", ["", "http://x.example", "a b", "10.0.0.0/33", "user@host"])
def test_malformed_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allowHosts"):
        EgressPolicy.from_entries([entry])
