"""BMP messages as routers send them (built here byte by byte from RFC 7854 / RFC 4271 / RFC 4760,
and FRR's own capture in tests/data/bmp), and as hostile input: whatever the bytes, the decoder
returns or raises `BmpError`, never anything else; the station keeps only what is ours, within its
bound, and counts the rest."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metallb_bgp.bmp.message import (
    FLAG_POST_POLICY,
    FLAG_V6,
    BmpError,
    MessageType,
    bgp_update,
    decode,
    frame_length,
)
from metallb_bgp.bmp.station import RouterReport, Station, router_verdict

OURS, OTHER, ROUTER = ipaddress.ip_address("10.1.0.11"), ipaddress.ip_address("192.0.2.9"), ipaddress.ip_address("10.1.0.1")
CAPTURE = Path(__file__).resolve().parent.parent / "data" / "bmp" / "frr-8.4-policy.bmp"


def bmp(kind: int, body: bytes) -> bytes:
    return struct.pack("!BIB", 3, 6 + len(body), kind) + body


def per_peer(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, flags: int = 0, asn: int = 64500) -> bytes:
    raw = address.packed if address.version == 6 else b"\0" * 12 + address.packed
    flags |= FLAG_V6 if address.version == 6 else 0
    return struct.pack("!BB8s16sI4sII", 0, flags, b"\0" * 8, raw, asn, ipaddress.IPv4Address("10.9.9.9").packed, 0, 0)


def nlri(*prefixes: str, path_id: bool = False) -> bytes:
    out = b""
    for text in prefixes:
        net = ipaddress.ip_network(text)
        size = (net.prefixlen + 7) // 8
        out += (b"\0\0\0\1" if path_id else b"") + bytes([net.prefixlen]) + net.network_address.packed[:size]
    return out


def attribute(code: int, value: bytes, flags: int = 0x40) -> bytes:
    if len(value) > 255:
        return bytes([flags | 0x10, code]) + struct.pack("!H", len(value)) + value
    return bytes([flags, code, len(value)]) + value


def update(announced: tuple[str, ...] = (), withdrawn: tuple[str, ...] = (), *, v6: tuple[str, ...] = (),
           path_id: bool = False) -> bytes:  # fmt: skip
    attrs = b""
    if announced:
        attrs += attribute(1, b"\0") + attribute(2, b"\2\1" + struct.pack("!I", 64500)) + attribute(3, OURS.packed)
        attrs += attribute(8, struct.pack("!HH", 64500, 1), flags=0xC0)
    if v6:
        hop = ipaddress.IPv6Address("fd00::11").packed
        attrs += attribute(14, struct.pack("!HBB", 2, 1, 16) + hop + b"\0" + nlri(*v6), flags=0x80)
    body = struct.pack("!H", len(nlri(*withdrawn, path_id=path_id))) + nlri(*withdrawn, path_id=path_id)
    body += struct.pack("!H", len(attrs)) + attrs + nlri(*announced, path_id=path_id)
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 2) + body


def route_monitoring(address, data: bytes, *, post: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    return bmp(0, per_peer(address, flags=FLAG_POST_POLICY if post else 0) + data)


def bgp_open(asn: int, bgp_id: str, capabilities: bytes = b"") -> bytes:
    params = bytes([2, len(capabilities)]) + capabilities if capabilities else b""
    body = struct.pack("!BHH4sB", 4, asn, 90, ipaddress.IPv4Address(bgp_id).packed, len(params)) + params
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 1) + body


def peer_up(address, local, *, add_path: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    caps = bytes([69, 4]) + struct.pack("!HBB", 1, 1, 3) if add_path else b""
    body = per_peer(address) + b"\0" * 12 + local.packed + struct.pack("!HH", 179, 40000)
    return bmp(3, body + bgp_open(64501, "10.1.0.1", caps) + bgp_open(64500, str(OURS), caps))


def test_a_route_monitoring_message_gives_its_prefixes_next_hop_path_and_communities() -> None:
    message = decode(route_monitoring(OURS, update(("198.51.100.1/32", "10.0.0.0/8"), ("198.51.100.7/32",)), post=True))
    assert message.type is MessageType.ROUTE_MONITORING and message.peer is not None
    assert message.peer.address == OURS and message.peer.post_policy and message.peer.asn == 64500
    assert message.update is not None
    assert message.update.announced == (ipaddress.ip_network("198.51.100.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert message.update.withdrawn == (ipaddress.ip_network("198.51.100.7/32"),)
    assert message.update.next_hop == OURS and message.update.as_path == (64500,) and message.update.communities == ("64500:1",)


def test_ipv6_routes_come_in_mp_reach_and_an_empty_update_is_end_of_rib() -> None:
    message = decode(route_monitoring(ipaddress.ip_address("fd00::11"), update(v6=("2001:db8::5/128",))))
    assert message.peer is not None and message.peer.address == ipaddress.ip_address("fd00::11")
    assert message.update is not None and message.update.announced == (ipaddress.ip_network("2001:db8::5/128"),)
    assert message.update.next_hop == ipaddress.ip_address("fd00::11")
    assert bgp_update(update()).end_of_rib


def test_peer_up_gives_the_routers_end_of_the_session_and_add_path_from_both_opens() -> None:
    message = decode(peer_up(OURS, ROUTER, add_path=True))
    assert message.type is MessageType.PEER_UP and message.local_address == ROUTER
    assert message.sent_open is not None and message.sent_open.bgp_id == ipaddress.ip_address("10.1.0.1")
    assert message.received_open is not None and message.received_open.asn == 64500
    # with add-path negotiated, each NLRI carries a path identifier
    decoded = bgp_update(update(("198.51.100.1/32",), path_id=True), add_path=frozenset({(1, 1)}))
    assert decoded.announced == (ipaddress.ip_network("198.51.100.1/32"),)


def test_frrs_own_capture_decodes_whole() -> None:
    """What FRR 8.4 sent for three /32s, one of them denied by its import policy (tests/frr.py)."""
    data, seen, offset = CAPTURE.read_bytes(), [], 0
    while offset < len(data):
        size = frame_length(data[offset : offset + 6])
        seen.append(decode(data[offset : offset + size]))
        offset += size
    assert [m.type for m in seen[:3]] == [MessageType.INITIATION, MessageType.PEER_DOWN, MessageType.PEER_UP]
    assert seen[0].info[2] == "test-frr"
    accepted = {str(p) for m in seen if m.update and m.peer and m.peer.post_policy for p in m.update.announced}
    assert accepted == {"198.51.100.0/32", "198.51.100.2/32"}


@pytest.mark.parametrize("cut", [7, 20, 47, 48, 60])
def test_a_truncated_message_is_refused(cut: int) -> None:
    whole = route_monitoring(OURS, update(("198.51.100.1/32",)))
    short = whole[:cut]
    with pytest.raises(BmpError):
        decode(struct.pack("!BIB", 3, len(short), 0) + short[6:])


def test_lying_lengths_are_refused() -> None:
    with pytest.raises(BmpError):
        frame_length(struct.pack("!BIB", 3, 1 << 30, 0))  # over MAX_MESSAGE: the stream is not read on
    with pytest.raises(BmpError):
        frame_length(struct.pack("!BIB", 2, 100, 0))  # BMP version 2
    bad_nlri = bytearray(update(("198.51.100.1/32",)))
    bad_nlri[-5] = 40  # a /40 in IPv4
    with pytest.raises(BmpError):
        decode(route_monitoring(OURS, bytes(bad_nlri)))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 6))
def test_any_bytes_decode_or_raise_bmp_error(junk: bytes, kind: int) -> None:
    message = bmp(kind, per_peer(OURS) + junk)
    try:
        decode(message)
    except BmpError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_valid_update_mutated_anywhere_decodes_or_raises_bmp_error(data: st.DataObject) -> None:
    message = bytearray(route_monitoring(OURS, update(("198.51.100.1/32", "10.0.0.0/8"), ("198.51.100.7/32",),
                                                      v6=("2001:db8::/64",))))  # fmt: skip
    for _ in range(data.draw(st.integers(1, 4))):
        message[data.draw(st.integers(6, len(message) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(message))
    except BmpError:
        pass


def _station(max_prefixes: int = 1000) -> tuple[Station, RouterReport]:
    station = Station("127.0.0.1", 0, (str(ROUTER),), is_ours=lambda a: a == OURS, max_prefixes=max_prefixes)
    return station, station.reports[str(ROUTER)]


def test_a_full_table_from_another_session_is_dropped_unread_and_ours_is_kept_within_the_bound() -> None:
    station, report = _station(max_prefixes=500)
    report.connected_since = 1.0
    station.take(report, peer_up(OURS, ROUTER))
    table = [f"{a}.{b}.0.0/16" for a in range(1, 200) for b in range(0, 250, 10)]  # ~5,000 routes of a transit peer
    for start in range(0, len(table), 500):
        assert not station.take(report, route_monitoring(OTHER, update(tuple(table[start : start + 500]))))
    assert report.dropped_not_ours == len(range(0, len(table), 500)) and report.prefixes() == 0
    ours = tuple(f"198.51.{i // 256}.{i % 256}/32" for i in range(600))
    station.take(report, route_monitoring(OURS, update(ours)))
    assert report.prefixes() == 500 and report.dropped_over_limit == 100
    # our address under ever new peer distinguishers: at most MAX_SESSIONS sessions are kept
    from metallb_bgp.bmp.station import MAX_SESSIONS

    for i in range(MAX_SESSIONS + 10):
        message = bytearray(peer_up(OURS, ROUTER))
        message[8:16] = i.to_bytes(8, "big")  # the per-peer header's distinguisher
        station.take(report, bytes(message))
    assert len(report.peers) == MAX_SESSIONS and report.dropped_over_limit == 100 + 10  # distinguisher 0 was there


def test_a_message_of_a_type_from_a_later_draft_is_skipped_not_fatal() -> None:
    station, report = _station()
    report.connected_since = 1.0
    assert not station.take(report, bmp(9, per_peer(OURS) + b"whatever a later draft says"))
    assert report.dropped_unknown == 1 and report.errors == 0
    assert station.take(report, peer_up(OURS, ROUTER))  # and the stream goes on


def test_verdicts_accepted_rejected_absent_and_pending() -> None:
    station, report = _station()
    report.connected_since, report.sys_name = 1.0, "tor-a"
    station.take(report, peer_up(OURS, ROUTER))
    station.take(report, route_monitoring(OURS, update(("198.51.100.1/32", "198.51.100.2/32"))))
    station.take(report, route_monitoring(OURS, update(("198.51.100.1/32",)), post=True))
    reports = station.report_of(ROUTER)

    def verdict(prefix: str, age: float = 1000.0) -> dict[str, object] | None:
        """As `age` seconds after the route was sent and the router reported the session."""
        now = time.time() + age
        return router_verdict(reports, ROUTER, OURS, ipaddress.ip_network(prefix), now=now, late=30, waiting_since=now - age)

    assert verdict("198.51.100.1/32") == {"router": "tor-a", "received": True, "accepted": True, "pending": False,
                                          "reason": "router tor-a accepted it (post-policy)"}  # fmt: skip
    rejected = verdict("198.51.100.2/32")
    assert rejected is not None and rejected["received"] is True and rejected["accepted"] is False
    absent = verdict("198.51.100.3/32")
    assert absent is not None and absent["received"] is False and absent["accepted"] is False and not absent["pending"]
    young = verdict("198.51.100.3/32", age=10.0)
    assert young is not None and young["pending"] is True
    # a Peer Down: the router holds nothing of that session any more
    station.take(report, bmp(2, per_peer(OURS) + b"\x02"))
    gone = verdict("198.51.100.1/32")
    assert gone is not None and gone["accepted"] is None and "reports nothing of this session" in str(gone["reason"])
    # no listed router ends that session: nothing to say
    assert router_verdict((), ROUTER, OURS, ipaddress.ip_network("198.51.100.1/32"), now=1.0, late=30, waiting_since=1.0) is None


def test_only_listed_routers_may_connect_a_reconnection_replaces_the_old_one_and_a_bad_message_closes_it() -> None:
    async def scenario() -> tuple[int, RouterReport]:
        station = Station("127.0.0.1", 0, ("127.0.0.2",), is_ours=lambda a: True)
        await station.start()
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", station.port)  # from 127.0.0.1: not listed
            writer.write(bmp(4, b""))
            await writer.drain()
            for _ in range(100):
                if station.refused:
                    break
                await asyncio.sleep(0.02)
            writer.close()
            # a router whose first connection died silently connects again: the new one replaces it
            stale_reader, stale = await asyncio.open_connection("127.0.0.1", station.port, local_addr=("127.0.0.2", 0))
            stale.write(bmp(4, struct.pack("!HH", 2, 5) + b"tor-a"))
            await stale.drain()
            report = station.reports["127.0.0.2"]
            for _ in range(100):
                if report.sys_name == "tor-a":
                    break
                await asyncio.sleep(0.02)
            reader, writer = await asyncio.open_connection("127.0.0.1", station.port, local_addr=("127.0.0.2", 0))
            async with asyncio.timeout(5):
                assert await stale_reader.read() == b""  # the station closed the earlier one
            writer.write(bmp(4, struct.pack("!HH", 2, 3) + b"tor") + struct.pack("!BIB", 3, 1 << 30, 0))
            await writer.drain()
            async with asyncio.timeout(5):
                await reader.read()  # the station closes it on the lying length
            writer.close()
            stale.close()
            return station.refused, report
        finally:
            await station.close()

    refused, report = asyncio.run(scenario())
    assert refused == 1  # the unlisted address only: a listed router's second connection is taken
    assert report.sys_name == "tor" and report.errors == 1 and "out of bounds" in str(report.last_error) and report.connected_since is None
