"""Slot arithmetic of schedules (domain/schedule_slots.py): properties and known instants."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whenflow.domain.schedule_slots import (
    latest_slots,
    next_slot,
    on_time,
    plan_due,
    slots_after,
    upcoming,
    zone,
)
from whenflow.domain.schedules import CatchUp, Schedule

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 29, 0, 0, tzinfo=UTC).timestamp()
CRONS = ["*/5 * * * *", "0 9 * * 1-5", "30 2 * * *", "30 1 * * *", "*/30 * * * *", "0 0 1 * *"]
ZONES = ["UTC", "Asia/Shanghai", "America/New_York", "Europe/Paris", "Australia/Lord_Howe"]


def utc(*parts: int) -> float:
    return dt.datetime(*parts, tzinfo=UTC).timestamp()


def schedules() -> st.SearchStrategy[Schedule]:
    every = st.builds(
        lambda s, anchored: Schedule(
            id="e",
            every_s=s,
            start=dt.datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC) if anchored else None,
        ),
        st.sampled_from([0.5, 1.0, 2.0, 60.0, 90.0, 3600.0, 86400.0]),
        st.booleans(),
    )
    cron = st.builds(
        lambda c, z: Schedule(id="c", cron=c, timezone=z),
        st.sampled_from(CRONS),
        st.sampled_from(ZONES),
    )
    return st.one_of(every, cron)


# Instants around the 2026 DST changes of New York (Mar 8, Nov 1) and Paris (Mar 29, Oct 25).
instants = st.floats(min_value=utc(2026, 3, 1), max_value=utc(2026, 11, 10))


@settings(max_examples=60, deadline=None)
@given(schedules(), instants)
def test_slots_strictly_increase_and_follow_after(schedule: Schedule, after: float) -> None:
    slots = slots_after(schedule, after, limit=12)
    assert len(slots) == 12
    assert slots[0] > after
    assert all(a < b for a, b in itertools.pairwise(slots))
    # next_slot from any slot is the following one: no slot is skipped or repeated.
    for a, b in itertools.pairwise(slots):
        assert next_slot(schedule, a) == b


@settings(max_examples=60, deadline=None)
@given(schedules(), instants, st.integers(min_value=1, max_value=8))
def test_latest_slots_agree_with_slots_after(schedule: Schedule, after: float, count: int) -> None:
    forward = slots_after(schedule, after, limit=10)
    until = forward[-1]
    assert latest_slots(schedule, after, until, count=count) == forward[-count:]
    # A bound exactly between two slots excludes the later one.
    between = (forward[-2] + forward[-1]) / 2
    assert latest_slots(schedule, after, between, count=count) == forward[:-1][-count:]


@settings(max_examples=80, deadline=None)
@given(
    schedules(),
    instants,
    st.floats(min_value=0, max_value=50),
    st.sampled_from(list(CatchUp)),
    st.integers(min_value=1, max_value=5),
)
def test_catch_up_policies(
    schedule: Schedule, after: float, periods: float, policy: CatchUp, maximum: int
) -> None:
    schedule = Schedule(
        id=schedule.id,
        cron=schedule.cron,
        every_s=schedule.every_s,
        timezone=schedule.timezone,
        start=schedule.start,
        catch_up=policy,
        max_catch_up=maximum,
    )
    first = slots_after(schedule, after, limit=2)
    now = first[0] + periods * (first[1] - first[0])
    due = latest_slots(schedule, after, now, count=10_000)
    plan = plan_due(schedule, after, now)
    fire = list(plan.fire)
    # What fires is due, oldest first, and the newest due slots.
    assert fire == sorted(fire)
    assert fire == due[len(due) - len(fire) :]
    # Everything due and not fired is decided by skip_through, and nothing fired is.
    skipped = due[: len(due) - len(fire)]
    assert plan.skip_through == (skipped[-1] if skipped else None)
    last_on_time = bool(due) and on_time(schedule, due[-1], now, 5.0)
    if policy is CatchUp.NONE:
        assert fire == ([due[-1]] if last_on_time else [])
    elif policy is CatchUp.LATEST:
        assert fire == due[-1:]
    else:
        missed = due[:-1] if last_on_time else due
        assert len(fire) == min(len(missed), maximum) + (1 if last_on_time else 0)


def test_every_is_anchored_to_start_or_the_epoch() -> None:
    epoch = Schedule(id="e", every_s=60)
    assert slots_after(epoch, utc(2026, 1, 1, 0, 0, 30), limit=2) == [
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 0, 2),
    ]
    start = dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    anchored = Schedule(id="e", every_s=60, start=start)
    # Before the start, the start itself is the first slot.
    assert slots_after(anchored, utc(2025, 12, 1), limit=2) == [
        start.timestamp(),
        start.timestamp() + 60,
    ]
    assert next_slot(anchored, utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 1, 10)


def test_end_bounds_the_slots() -> None:
    ended = Schedule(id="e", every_s=60, end=dt.datetime(2026, 1, 1, 0, 2, tzinfo=UTC))
    assert slots_after(ended, utc(2026, 1, 1), limit=5) == [
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 0, 2),
    ]
    assert next_slot(ended, utc(2026, 1, 1, 0, 2)) is None


def test_shanghai_cron_fires_at_the_right_utc_instants_across_a_date_change() -> None:
    # 07:00 in Shanghai (UTC+8) is 23:00 UTC of the day before.
    morning = Schedule(id="c", cron="0 7 * * *", timezone="Asia/Shanghai")
    assert slots_after(morning, utc(2026, 11, 29, 12), limit=2) == [
        utc(2026, 11, 29, 23),
        utc(2026, 11, 30, 23),
    ]
    weekdays = Schedule(id="c", cron="0 9 * * 1-5", timezone="Asia/Shanghai")
    # Friday 2026-12-04 09:00 +08 is 01:00 UTC; the next is Monday 2026-12-07.
    assert slots_after(weekdays, utc(2026, 12, 3, 2), limit=2) == [
        utc(2026, 12, 4, 1),
        utc(2026, 12, 7, 1),
    ]
    shown = upcoming(weekdays, utc(2026, 12, 3, 2), 1)[0]
    assert shown.isoformat() == "2026-12-04T09:00:00+08:00"


def test_dst_spring_gap_fires_once_after_the_gap() -> None:
    daily = Schedule(id="c", cron="30 2 * * *", timezone="America/New_York")
    slots = slots_after(daily, utc(2026, 3, 7, 12), limit=3)
    local = [dt.datetime.fromtimestamp(s, zone("America/New_York")).isoformat() for s in slots]
    assert local == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


def test_dst_autumn_repeat_fires_a_fixed_hour_once_and_a_wildcard_hour_on_real_time() -> None:
    daily = Schedule(id="c", cron="30 1 * * *", timezone="America/New_York")
    slots = slots_after(daily, utc(2026, 10, 31, 12), limit=2)
    assert slots == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    half_hourly = Schedule(id="c", cron="*/30 * * * *", timezone="America/New_York")
    slots = slots_after(half_hourly, utc(2026, 11, 1, 4, 50), limit=5)
    assert [b - a for a, b in itertools.pairwise(slots)] == [1800.0] * 4


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd"])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        zone(name)
