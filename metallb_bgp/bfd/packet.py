"""BFD control packets (RFC 5880 section 4.1): the 24-byte mandatory section; authentication is not
supported, and a packet asking for it is discarded (section 6.8.6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

_FORMAT = struct.Struct("!BBBBIIIII")
LENGTH = _FORMAT.size  # 24
VERSION = 1


class State(IntEnum):
    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diag(IntEnum):
    NONE = 0
    DETECTION_EXPIRED = 1
    NEIGHBOR_DOWN = 3
    ADMIN_DOWN = 7


@dataclass(frozen=True)
class Packet:
    state: State
    detect_mult: int
    my_discr: int
    your_discr: int
    desired_min_tx: int  # microseconds
    required_min_rx: int  # microseconds
    required_min_echo_rx: int = 0
    diag: Diag = Diag.NONE
    poll: bool = False
    final: bool = False
    control_independent: bool = False  # the C bit: 0 here, BFD shares fate with the speaker (RFC 5882 4.3)
    demand: bool = False


def encode(packet: Packet) -> bytes:
    flags = (packet.poll << 5) | (packet.final << 4) | (packet.control_independent << 3) | (packet.demand << 1)
    return _FORMAT.pack(
        (VERSION << 5) | int(packet.diag), (int(packet.state) << 6) | flags, packet.detect_mult, LENGTH,
        packet.my_discr, packet.your_discr, packet.desired_min_tx, packet.required_min_rx, packet.required_min_echo_rx,
    )  # fmt: skip


def decode(data: bytes) -> Packet | None:
    """The packet, or None if RFC 5880 section 6.8.6 says to discard it."""
    if len(data) < LENGTH:
        return None
    first, second, mult, length, mine, yours, tx, rx, echo = _FORMAT.unpack_from(data)
    if first >> 5 != VERSION or length < LENGTH or length > len(data) or mult == 0 or mine == 0:
        return None
    state = State(second >> 6)
    if second & 0x04 or second & 0x01:  # the A bit (authentication) or the M bit (multipoint)
        return None
    if yours == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
        return None
    try:
        diag = Diag(first & 0x1F)
    except ValueError:
        diag = Diag.NONE  # a diagnostic we do not name: it changes nothing we do
    return Packet(
        state=state, detect_mult=mult, my_discr=mine, your_discr=yours, desired_min_tx=tx, required_min_rx=rx,
        required_min_echo_rx=echo, diag=diag, poll=bool(second & 0x20), final=bool(second & 0x10),
        control_independent=bool(second & 0x08), demand=bool(second & 0x02),
    )  # fmt: skip
