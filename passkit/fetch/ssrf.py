"""SSRF guard: a crawler fed with URLs from strangers must never reach inside the network it runs in.

Two checks, both needed:

* before a request (the URL and every redirect target): the scheme must be http or https, and the
  host, an IP literal or every address its name resolves to, must be a public unicast address;
* after the TCP connect: the address the socket actually reached is checked again, which defeats
  DNS rebinding (a name that resolves to a public address for the check and to 10.0.0.1 for the
  connect).

Loopback, private (RFC 1918, ULA), link-local (169.254/16 with the cloud metadata service, fe80::/10),
multicast, shared (100.64/10), documentation, reserved and unspecified addresses are refused unless
the spec allowlists the host name, the address or a network holding it (`fetch.allow_private`).
An IPv6 address that carries an IPv4 address (IPv4-mapped and -compatible, 6to4, Teredo, NAT64,
ISATAP) is judged by the IPv4 address it carries, which is where a stack, relay or translator sends it.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from passkit.reasons import Rejection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOWED_SCHEMES = frozenset({"http", "https"})


class Refused(Rejection):
    """A URL or connection the guard will not allow; `reason` is the ledger code."""


def classify(ip: IPAddress) -> str | None:
    """Why an address is off limits ("loopback", "private", ...), or None for a public unicast one."""
    hit = offender(ip)
    return None if hit is None else hit[0]


def offender(ip: IPAddress) -> tuple[str, IPAddress] | None:
    """(why, the address to blame) when `ip` is off limits, else None.

    An IPv6 address that carries an IPv4 address (mapped, compatible, 6to4, Teredo, NAT64, ISATAP)
    can be routed to that IPv4 address by this host's stack, a relay or a translator, so it is
    judged by the IPv4 address it carries; only when every embedded address is public does the IPv6
    address's own class decide.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_unspecified or ip.is_loopback:  # :: and ::1 sit inside ::/96 but are IPv6's own
            return _own_class(ip), ip
        for v4 in embedded_ipv4(ip):
            why = _own_class(v4)
            if why is not None:
                return why, v4
        if ip.ipv4_mapped is not None or int(ip) >> 48 == 0x2002 or int(ip) >> 32 == _NAT64_WKP:
            return None  # pure translations of a public IPv4 address: that address decides
        if int(ip) >> 80 == _NAT64_LOCAL:
            return "reserved", ip  # a local translator (RFC 8215), not reachable from the internet
    why = _own_class(ip)
    return None if why is None else (why, ip)


_NAT64_WKP = 0x0064FF9B_00000000_00000000  # 64:ff9b::/96 (RFC 6052), as its top 96 bits
_NAT64_LOCAL = 0x0064FF9B0001  # 64:ff9b:1::/48 (RFC 8215), as its top 48 bits
_ISATAP_IDS = frozenset({0x00005EFE, 0x02005EFE, 0x01005EFE, 0x03005EFE})  # ::5efe and ::200:5efe, u/g bits


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries in a form some router or stack delivers to it."""
    n = int(ip)
    out: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:  # ::ffff:0:0/96
        out.append(ip.ipv4_mapped)
    elif n >> 32 == 0:  # IPv4-compatible ::a.b.c.d (deprecated; dual stacks may still route it as IPv4)
        out.append(ipaddress.IPv4Address(n))
    if ip.sixtofour is not None:  # 2002:V4HI:V4LO::/48
        out.append(ip.sixtofour)
    if ip.teredo is not None:  # 2001:0::/32: (server, client), the client stored inverted
        out.extend(ip.teredo)
    if n >> 32 == _NAT64_WKP:  # 64:ff9b::a.b.c.d
        out.append(ipaddress.IPv4Address(n & 0xFFFFFFFF))
    if n >> 80 == _NAT64_LOCAL:
        # 64:ff9b:1::/48: the operator picks the prefix length, so try each. A candidate in 0/8 is the
        # zero padding of another length, not an address.
        out.extend(v4 for v4 in (_rfc6052(n, plen) for plen in (48, 56, 64, 96)) if int(v4) >> 24)
    if (n >> 32) & 0xFFFFFFFF in _ISATAP_IDS:  # ISATAP interface id: prefix:0:5efe:a.b.c.d
        out.append(ipaddress.IPv4Address(n & 0xFFFFFFFF))
    return out


def _rfc6052(n: int, plen: int) -> ipaddress.IPv4Address:
    """The IPv4 address in an IPv4-embedded IPv6 address with a `plen`-bit prefix (bits 64-71 skipped)."""
    if plen == 96:
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    octets = [(n >> (120 - 8 * i)) & 0xFF for i in range(16)]  # octets[0] is the most significant
    start = plen // 8
    carried = [o for i, o in enumerate(octets[start:], start) if i != 8][:4]
    return ipaddress.IPv4Address(bytes(carried))


def _own_class(ip: IPAddress) -> str | None:
    """The class of the address itself, embedded addresses aside."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"  # shared address space (100.64/10) and other special-purpose blocks
    return None


@dataclass(frozen=True, slots=True)
class Allowlist:
    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, items: Iterable[str]) -> Allowlist:
        hosts: set[str] = set()
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in items:
            item = item.strip().lower()
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.rstrip("."))
        return cls(frozenset(hosts), tuple(nets))

    def allows_ip(self, ip: IPAddress, blamed: IPAddress | None = None) -> bool:
        """`ip` is allowlisted, or `blamed`, the address it embeds that made it off limits, is."""
        mapped = getattr(ip, "ipv4_mapped", None)
        return any(ip in n or (mapped is not None and mapped in n) or (blamed is not None and blamed in n)
                   for n in self.networks)


class Guard:
    """Checks URLs (before) and peer addresses (after connect). Thread-safe; caches DNS answers."""

    def __init__(self, allow: Iterable[str] = (), resolve: bool = True):
        self.allow = Allowlist.parse(allow)
        self.resolve = resolve
        self._dns: dict[tuple[str, int], list[IPAddress]] = {}
        self._lock = threading.Lock()

    def check_url(self, url: str) -> urllib.parse.SplitResult:
        """The parsed URL when it may be fetched; raises Refused (bad_scheme, bad_url, ssrf_*)."""
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise Refused("bad_url", f"{url[:200]!r}: {e}") from None
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise Refused("bad_scheme", f"scheme {scheme or '(none)'!r} in {url[:200]!r}: only http and https")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise Refused("bad_url", f"no host in {url[:200]!r}")
        if host in self.allow.hosts:
            return parts
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            self._check_ip(host, literal)
            return parts
        if self.resolve:
            for ip in self._lookup(host, port or (443 if scheme == "https" else 80)):
                self._check_ip(host, ip)
        return parts

    def check_peer(self, host: str, address: str) -> None:
        """Called with the address a socket connected to; raises Refused when it is off limits."""
        host = (host or "").strip("[]").rstrip(".").lower()
        if host in self.allow.hosts:
            return
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise Refused("ssrf_reserved", f"{host} connected to an unparseable address {address!r}") from None
        self._check_ip(host, ip)

    def _check_ip(self, host: str, ip: IPAddress) -> None:
        hit = offender(ip)
        if hit is None:
            return
        why, blamed = hit
        if self.allow.allows_ip(ip, blamed):
            return
        shown = host if host == str(ip) else f"{host} ({ip})"
        via = "" if blamed == ip else f" (it carries the IPv4 address {blamed})"
        raise Refused(
            f"ssrf_{why}",
            f"{shown} is a {why.replace('_', '-')} address{via}; add it to fetch.allow_private to crawl it on purpose",
        )

    def _lookup(self, host: str, port: int) -> list[IPAddress]:
        key = (host, port)
        with self._lock:
            hit = self._dns.get(key)
        if hit is not None:
            return hit
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            # EAI_AGAIN is a resolver hiccup worth a later retry; NXDOMAIN and friends are not.
            transient = getattr(e, "errno", None) == getattr(socket, "EAI_AGAIN", -3)
            raise Refused("dns_error", f"cannot resolve {host!r}: {e}", transient) from None
        ips: list[IPAddress] = []
        for info in infos:
            try:
                ips.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
            except ValueError:
                continue
        with self._lock:
            if len(self._dns) > 100_000:
                self._dns.clear()
            self._dns[key] = ips
        return ips
