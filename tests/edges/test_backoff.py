"""The engine's one retry policy: exponential, capped, jittered, reset by the caller."""

from __future__ import annotations

from metallb_bgp.exabgp.backoff import Backoff


def test_waits_double_up_to_the_cap_each_within_its_jitter() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.25)
    waits = [backoff.next() for _ in range(6)]
    for wait, ceiling in zip(waits, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.75 * ceiling <= wait <= ceiling
    assert backoff.failures == 6


def test_a_reset_starts_again_from_the_initial_wait() -> None:
    backoff = Backoff(initial=0.5, maximum=60.0, jitter=0.0)
    assert [backoff.next() for _ in range(3)] == [0.5, 1.0, 2.0]
    backoff.reset()
    assert backoff.next() == 0.5
