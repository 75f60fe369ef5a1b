"""SSRF guard: IPv6 addresses that carry an IPv4 address are judged by the address they carry.

A relay, translator or the local stack delivers them to that IPv4 address, so 6to4 of 127.0.0.1 is
as much loopback as 127.0.0.1 itself.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from passkit.fetch.ssrf import Guard, Refused, classify

# Teredo: 2001:0:<server v4>:<flags>:<port>:<client v4 with every bit inverted>.
_SERVER = "4136:e378"  # 65.54.227.120, a public Teredo server


def _teredo(server: str, client: str) -> str:
    inverted = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return f"2001:0:{server}:8000:63bf:{inverted >> 16:x}:{inverted & 0xFFFF:x}"


EMBEDDED = [
    # (IPv6 address, the class of the IPv4 address it carries)
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "link_local"),
    ("::127.0.0.1", "loopback"),  # IPv4-compatible
    ("::10.0.0.1", "private"),
    ("::169.254.169.254", "link_local"),
    ("2002:7f00:1::", "loopback"),  # 6to4: the v4 in bits 16-48
    ("2002:a00:1:1::1", "private"),
    ("2002:a9fe:a9fe::", "link_local"),
    (_teredo(_SERVER, "127.0.0.1"), "loopback"),  # Teredo client
    (_teredo(_SERVER, "10.0.0.1"), "private"),
    (_teredo(_SERVER, "169.254.169.254"), "link_local"),
    (_teredo("a00:1", "8.8.8.8"), "private"),  # Teredo server
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 well-known prefix
    ("64:ff9b::10.0.0.1", "private"),
    ("64:ff9b::169.254.169.254", "link_local"),
    ("64:ff9b:1::7f00:1", "loopback"),  # local-use NAT64, /96
    ("64:ff9b:1:7f00:0:100::", "loopback"),  # local-use NAT64, /48: v4 split around bits 64-71
    ("64:ff9b:1:a9:fe:a9fe::", "link_local"),  # /56
    ("64:ff9b:1:0:a:0:100:0", "private"),  # /64
    ("2a00:1450::5efe:127.0.0.1", "loopback"),  # ISATAP interface ids under a public prefix
    ("2a00:1450::200:5efe:10.0.0.1", "private"),
    ("2a00:1450::5efe:169.254.169.254", "link_local"),
]

PUBLIC = [
    "::ffff:8.8.8.8",  # mapped public v4
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::8.8.8.8",  # NAT64 of a public v4
    "2a00:1450:4001:82a::200e",  # plain global IPv6
    "2a00:1450::5efe:8.8.8.8",  # ISATAP id carrying a public v4
]


@pytest.mark.parametrize(("address", "why"), EMBEDDED)
def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(address, why):
    assert classify(ipaddress.ip_address(address)) == why
    with pytest.raises(Refused) as e:
        Guard().check_url(f"http://[{address}]/x.jpg")
    assert e.value.reason == f"ssrf_{why}"
    with pytest.raises(Refused) as e:  # after connect too (a name that rebinds to it)
        Guard().check_peer("rebind.example", address)
    assert e.value.reason == f"ssrf_{why}"


@pytest.mark.parametrize("address", PUBLIC)
def test_ipv6_forms_of_public_ipv4_stay_allowed(address):
    assert classify(ipaddress.ip_address(address)) is None
    Guard().check_url(f"http://[{address}]/x.jpg")
    Guard().check_peer("example.org", address)


def test_local_use_nat64_is_never_public():
    """64:ff9b:1::/48 reaches a translator of the local network (RFC 8215), whatever it carries."""
    assert classify(ipaddress.ip_address("64:ff9b:1::808:808")) == "reserved"


def test_ipv6_own_classes_still_apply():
    for address, why in [("::1", "loopback"), ("::", "unspecified"), ("fe80::5efe:8.8.8.8", "link_local"),
                         ("fd00::1", "private"), ("ff02::1", "multicast")]:
        assert classify(ipaddress.ip_address(address)) == why, address


def test_a_name_resolving_to_an_embedding_address_is_refused(monkeypatch):
    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2002:a9fe:a9fe::1", port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(Refused) as e:
        Guard().check_url("http://metadata.attacker.example/latest/meta-data/")
    assert e.value.reason == "ssrf_link_local"
    assert "169.254.169.254" in e.value.detail and "allow_private" in e.value.detail


def test_allowlisting_the_carried_address_admits_it():
    """The demo allowlists 127.0.0.1: an IPv6 form of it is that address on purpose too."""
    Guard(allow=["127.0.0.1"]).check_url("http://[2002:7f00:1::]/x.jpg")
    Guard(allow=["10.0.0.0/8"]).check_peer("intranet", "64:ff9b::10.9.8.7")
    with pytest.raises(Refused):
        Guard(allow=["10.0.0.0/8"]).check_url("http://[2002:7f00:1::]/x.jpg")
