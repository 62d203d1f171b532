"""BFD's packets and state machine (RFC 5880), pure: two sessions talking to each other in memory.
The real sockets against a real router are tested in tests/e2e/test_multinode.py (BIRD's `protocol bfd`)."""

from __future__ import annotations

from metallb_bgp.bfd.packet import LENGTH, Diag, Packet, State, decode, encode
from metallb_bgp.bfd.session import SLOW_US, Profile, Session


def test_a_packet_survives_encoding_and_the_rfc_discard_rules_hold() -> None:
    packet = Packet(State.UP, 3, 7, 9, 300_000, 300_000, diag=Diag.NEIGHBOR_DOWN, poll=True)
    data = encode(packet)
    assert len(data) == LENGTH and decode(data) == packet
    assert decode(data[:20]) is None  # short
    assert decode(bytes([0x40]) + data[1:]) is None  # version 2
    assert decode(encode(Packet(State.UP, 3, 7, 0, 1, 1))) is None  # your discriminator 0 while Up
    assert decode(encode(Packet(State.DOWN, 3, 0, 0, 1, 1))) is None  # my discriminator 0
    assert decode(data[:1] + bytes([data[1] | 0x04]) + data[2:]) is None  # authentication asked for
    assert decode(encode(Packet(State.DOWN, 3, 7, 0, 1, 1))) is not None


def _exchange(a: Session, b: Session, now: float, sent: list[Packet] | None = None) -> None:
    for sender, receiver in ((a, b), (b, a)):
        packet = decode(encode(sender.packet()))
        assert packet is not None
        if sent is not None:
            sent.append(packet)
        receiver.receive(packet, now)


def test_two_sessions_come_up_then_poll_to_the_profile_interval_and_a_silent_one_is_detected() -> None:
    profile = Profile(transmit_ms=300, receive_ms=300, detect_multiplier=3)
    a, b = Session(local_discr=1, profile=profile), Session(local_discr=2, profile=profile)
    assert a.tx_interval() == SLOW_US / 1e6  # at most once a second while not Up
    sent: list[Packet] = []
    for step in range(5):
        _exchange(a, b, float(step), sent)
    assert (a.state, b.state) == (State.UP, State.UP)
    # the interval changed on coming up: a Poll sequence announced it, and it was answered
    assert any(p.poll for p in sent) and any(p.final for p in sent)
    assert not a.polling and not b.polling and a.tx_interval() == 0.3
    assert a.detection_time() == 0.9
    assert not a.expire(4.0 + 0.85)
    assert a.expire(4.0 + 0.95) and (a.state, a.diag) == (State.DOWN, Diag.DETECTION_EXPIRED)
    assert a.tx_interval() == 1.0 and a.remote_discr == 0


def test_admin_down_from_the_remote_takes_the_session_down_and_a_passive_one_waits_to_be_spoken_to() -> None:
    profile = Profile()
    a, b = Session(local_discr=1, profile=profile), Session(local_discr=2, profile=Profile(passive=True))
    assert not b.may_send()
    for step in range(3):
        _exchange(a, b, float(step))
    assert b.may_send() and a.state is State.UP
    b.state = State.ADMIN_DOWN
    packet = decode(encode(b.packet()))
    assert packet is not None
    assert a.receive(packet, 5.0) is State.DOWN and a.diag is Diag.NEIGHBOR_DOWN


def test_a_shorter_interval_pulls_in_the_packet_already_scheduled_at_the_slow_rate() -> None:
    """Coming Up drops our interval from 1 s to 300 ms and the remote's detection time with it: a packet
    still scheduled a second away would arrive after the remote gave up (FRR's bfdd did, every time)."""
    profile = Profile(transmit_ms=300, receive_ms=300, detect_multiplier=3)
    a, b = Session(local_discr=1, profile=profile), Session(local_discr=2, profile=profile)
    first = decode(encode(a.packet()))
    assert first is not None
    b.receive(first, 0.0)  # b heard a's Down: b is Init
    a.schedule(0.0)  # a is Down: its next packet is 0.75-1.0 s away
    assert a.state is State.DOWN and a.next_tx >= 0.75
    packet = decode(encode(b.packet()))
    assert packet is not None
    a.receive(packet, 0.0)
    assert a.state is State.UP and a.tx_interval() == 0.3
    assert a.next_tx <= 0.3
    later = a.next_tx
    a.receive(packet, 0.1)  # an interval that did not shrink leaves the schedule alone
    assert a.next_tx == later
