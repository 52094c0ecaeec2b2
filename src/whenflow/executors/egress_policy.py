"""The egress policy of `http` and `llm` tasks (DESIGN.md §10): which addresses they may reach.

A task may reach public addresses. Loopback, link-local (169.254.0.0/16 with
the cloud metadata address, fe80::/10), private (10/8, 172.16/12, 192.168/16,
fc00::/7), shared (100.64/10), unspecified, multicast and other non-global
addresses are denied unless the task's `allowHosts` (host names, `*.suffix`
wildcards, IP addresses or CIDRs) or its connection permits them. Pure: the
check at connect time is `whenflow.executors.egress`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def denied_reason(address: IPAddress) -> str | None:
    """Why the policy denies `address` by default ("loopback", ...), or None for a public one.

    An IPv6 address that embeds an IPv4 one (mapped `::ffff:a.b.c.d`, 6to4,
    NAT64) is judged by the IPv4 address it reaches.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return denied_reason(embedded)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-global (reserved or shared)"
    return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What a task may reach beyond public addresses.

    `hosts`: lower-case host names whose every address is permitted (an entry
    `*.example.com` permits its subdomains); `networks`: addresses permitted
    whatever name led to them.
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> EgressPolicy:
        """A policy from `allowHosts` entries; raises ValueError naming a malformed one."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().lower().strip("[]")
            if not text:
                raise ValueError("an empty `allowHosts` entry")
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            name = text.removeprefix("*.")
            if "/" in text or not name or any(c in name for c in " :@?#"):
                raise ValueError(
                    f"`allowHosts` entry {entry!r} is neither a host name, a `*.domain` "
                    "wildcard, an IP address nor a CIDR like 10.0.0.0/8"
                )
            hosts.add(text)
        return cls(frozenset(hosts), tuple(networks))

    def merged(self, other: EgressPolicy) -> EgressPolicy:
        return EgressPolicy(self.hosts | other.hosts, self.networks + other.networks)

    def permits_host(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        if name in self.hosts:
            return True
        return any(
            entry.startswith("*.") and name.endswith(entry[1:]) and len(name) > len(entry) - 1
            for entry in self.hosts
        )

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why connecting to `address` (resolved from `host`) is refused, or None."""
        if self.permits_host(host):
            return None
        if any(address.version == net.version and address in net for net in self.networks):
            return None
        return denied_reason(address)
