"""One BFD session's state machine (RFC 5880 section 6.2 and 6.8), pure: packets and times in,
packets and state changes out. The daemon owns the sockets and the clock.

Timers: while not Up, the session sends at most once a second (section 6.8.3); once Up it moves to
the profile's intervals with a Poll sequence, and back to one second when it goes down. A shorter
interval takes effect at once: the packet already scheduled a second away is pulled in. The detection
time is the remote's detect multiplier times the slower of our required receive interval and its
desired transmit interval (asynchronous mode). Echo and demand mode are not implemented.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from metallb_bgp.bfd.packet import Diag, Packet, State

SLOW_US = 1_000_000  # the transmit interval while the session is not Up


@dataclass(frozen=True)
class Profile:
    """What a BFDProfile asks for (milliseconds, as MetalLB writes them)."""

    transmit_ms: int = 300
    receive_ms: int = 300
    detect_multiplier: int = 3
    passive: bool = False


@dataclass
class Session:
    local_discr: int
    profile: Profile
    state: State = State.DOWN
    diag: Diag = Diag.NONE
    remote_discr: int = 0
    remote_state: State = State.DOWN
    remote_min_rx_us: int = 1
    remote_desired_tx_us: int = 0
    remote_detect_mult: int = 0
    polling: bool = False  # we sent Poll and wait for Final
    reply_final: bool = False  # the remote polled: the next packet carries Final, sent now
    last_rx: float | None = None
    next_tx: float = 0.0
    _tx_us: int = field(default=SLOW_US)  # the desired transmit interval we advertise

    @property
    def required_min_rx_us(self) -> int:
        return self.profile.receive_ms * 1000

    def tx_interval(self) -> float:
        """Seconds between our packets (before jitter): the slower of what we want and what it accepts."""
        return max(self._tx_us, self.remote_min_rx_us) / 1e6

    def detection_time(self) -> float:
        return self.remote_detect_mult * max(self.required_min_rx_us, self.remote_desired_tx_us) / 1e6

    def packet(self) -> Packet:
        final, self.reply_final = self.reply_final, False
        return Packet(
            state=self.state, detect_mult=self.profile.detect_multiplier, my_discr=self.local_discr,
            your_discr=self.remote_discr, desired_min_tx=self._tx_us, required_min_rx=self.required_min_rx_us,
            diag=self.diag, poll=self.polling and not final, final=final,
        )  # fmt: skip

    def may_send(self) -> bool:
        """A passive session stays silent until the remote spoke (RFC 5880 6.1)."""
        return not self.profile.passive or self.remote_discr != 0

    def schedule(self, now: float) -> None:
        """The next transmission, jittered to 75-100% of the interval (75-90% with a multiplier of 1)."""
        top = 0.9 if self.profile.detect_multiplier == 1 else 1.0
        self.next_tx = now + self.tx_interval() * random.uniform(0.75, top)

    def receive(self, packet: Packet, now: float) -> State | None:
        """Take one packet (already matched to this session); the new state if it changed."""
        self.remote_discr = packet.my_discr
        self.remote_state = packet.state
        self.remote_min_rx_us = max(packet.required_min_rx, 1)
        self.remote_desired_tx_us = packet.desired_min_tx
        self.remote_detect_mult = packet.detect_mult
        self.last_rx = now
        if packet.final:
            self.polling = False
        if packet.poll:
            self.reply_final = True
        before = self.state
        if packet.state is State.ADMIN_DOWN:
            if self.state is not State.DOWN:
                self._down(Diag.NEIGHBOR_DOWN)
        elif self.state is State.DOWN:
            if packet.state is State.DOWN:
                self.state = State.INIT
            elif packet.state is State.INIT:
                self._up()
        elif self.state is State.INIT:
            if packet.state in (State.INIT, State.UP):
                self._up()
        elif packet.state is State.DOWN:  # Up
            self._down(Diag.NEIGHBOR_DOWN)
        self._pull_in(now)
        return self.state if self.state is not before else None

    def _pull_in(self, now: float) -> None:
        """A shorter interval (we came Up, or the remote now accepts packets faster) takes effect now,
        not after the slow packet already scheduled: the remote's detection time shrinks with the
        interval we advertise, and a packet still a second away would expire it (FRR's bfdd did,
        within a second of every Up, before this)."""
        if self.next_tx > now + self.tx_interval():
            self.schedule(now)

    def expire(self, now: float) -> bool:
        """Whether the detection time ran out (the session then went down)."""
        if self.state not in (State.INIT, State.UP) or self.last_rx is None:
            return False
        if now - self.last_rx <= self.detection_time():
            return False
        self._down(Diag.DETECTION_EXPIRED)
        self.remote_discr = 0
        return True

    def _up(self) -> None:
        self.state, self.diag = State.UP, Diag.NONE
        if self._tx_us != self.profile.transmit_ms * 1000:
            self._tx_us = self.profile.transmit_ms * 1000
            self.polling = True  # a changed interval is announced with a Poll sequence (6.8.3)

    def _down(self, diag: Diag) -> None:
        self.state, self.diag = State.DOWN, diag
        self._tx_us = max(SLOW_US, self.profile.transmit_ms * 1000)
        self.polling = False
