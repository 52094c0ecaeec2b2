"""An error's retry hint (an HTTP 429's Retry-After) and the retry policy's delay."""

from __future__ import annotations

from whenflow.domain.definitions import RETRY_HINT_CAP_S, Backoff, RetryPolicy
from whenflow.domain.errors import TaskError, retry_hint


class Hinted(TaskError):
    def __init__(self, hint: object) -> None:
        super().__init__("hinted")
        self.retry_after_s = hint


def test_retry_hint_reads_a_positive_number_only() -> None:
    assert retry_hint(Hinted(2.5)) == 2.5
    assert retry_hint(Hinted(3)) == 3.0
    for hint in (0, -1, None, True, "5"):
        assert retry_hint(Hinted(hint)) is None
    assert retry_hint(ValueError("no hint")) is None


def test_a_hint_lengthens_the_delay_within_its_caps() -> None:
    policy = RetryPolicy(max_attempts=3, delay_s=1.0, backoff=Backoff.EXPONENTIAL)
    assert policy.delay_after(2) == 2.0
    assert policy.delay_after(2, 5.0) == 5.0
    assert policy.delay_after(2, 0.5) == 2.0  # a shorter hint never shortens the delay
    assert policy.delay_after(1, 10_000.0) == RETRY_HINT_CAP_S
    capped = RetryPolicy(max_attempts=3, delay_s=1.0, max_delay_s=4.0)
    assert capped.delay_after(1, 60.0) == 4.0
