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
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
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

    def allows_ip(self, ip: IPAddress) -> bool:
        mapped = getattr(ip, "ipv4_mapped", None)
        return any(ip in n or (mapped is not None and mapped in n) for n in self.networks)


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
        why = classify(ip)
        if why is None or self.allow.allows_ip(ip):
            return
        shown = host if host == str(ip) else f"{host} ({ip})"
        raise Refused(
            f"ssrf_{why}",
            f"{shown} is a {why.replace('_', '-')} address; add it to fetch.allow_private to crawl it on purpose",
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
