"""When a schedule fires: its slots, and which due slots fire after downtime (DESIGN.md §12).

Pure functions of a `Schedule` and instants (Unix seconds, floats); no clock,
no I/O.

- A **slot** is an instant the schedule fires at. `every` slots are
  `anchor + k·every` (the anchor is `start`, else the Unix epoch), computed
  in whole microseconds so they never drift. `cron` slots are the instants
  whose wall time in `timezone` matches the expression (croniter), with the
  two daylight-saving rules of Vixie cron: a wall time skipped by a spring
  change fires at the first wall time after the gap (once), and a wall time
  that occurs twice in an autumn change fires once (the first time) unless
  the hour field is a wildcard (`*/30 * * * *` keeps its real period).
- Slots before `start` or after `end` do not exist.
- `plan_due` decides, from the slots due since the last one decided, which
  fire under the schedule's `catchUp`: a slot is **on time** when it is late
  by at most `grace_s` and at most half the time to its next slot; every
  other due slot was **missed** (the scheduler was down or busy).
  `none` fires only an on-time slot; `latest` fires the latest due slot;
  `all` fires the missed slots (the latest `maxCatchUp` of them) and the
  on-time one, oldest first. The other due slots are skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from whenflow.domain.schedules import CatchUp, Schedule

_US = 1_000_000
DEFAULT_GRACE_S = 5.0
"""How late a slot may fire and still count as on time (scheduling and loop delays)."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; raises ValueError naming the problem."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as UTC, Europe/Paris "
            "or Asia/Shanghai"
        ) from exc


def check_cron(expression: str) -> str:
    """The expression if croniter reads it (5 fields, or 6 with seconds); else ValueError."""
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise ValueError(
            f"{expression!r} is not a cron expression; write five fields "
            '"minute hour day-of-month month day-of-week", e.g. "0 9 * * 1-5"'
        )
    return expression


def _every_us(schedule: Schedule) -> int:
    assert schedule.every_s is not None
    return max(1, round(schedule.every_s * _US))


def _anchor_us(schedule: Schedule) -> int:
    return 0 if schedule.start is None else round(schedule.start.timestamp() * _US)


def _lower_bound(schedule: Schedule) -> float | None:
    return None if schedule.start is None else schedule.start.timestamp()


def _upper_bound(schedule: Schedule) -> float | None:
    return None if schedule.end is None else schedule.end.timestamp()


def _hour_is_wildcard(expression: str) -> bool:
    fields = expression.split()
    hour = fields[1] if len(fields) >= 2 else "*"
    return hour.startswith("*")


def _second_occurrence(moment: dt.datetime, tz: ZoneInfo) -> bool:
    """Whether `moment` is the repeat of a wall time an autumn change makes occur twice."""
    wall = moment.astimezone(tz).replace(tzinfo=None)
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    return first != second and moment.astimezone(tz).utcoffset() == second


def _cron_after(schedule: Schedule, after: float) -> Iterator[float]:
    """Cron slots strictly after `after`, ascending, without the DST repeats."""
    assert schedule.cron is not None
    tz = zone(schedule.timezone)
    skip_repeats = not _hour_is_wildcard(schedule.cron)
    start = dt.datetime.fromtimestamp(after, tz)
    iterator = croniter(schedule.cron, start)
    last = after
    while True:
        moment: dt.datetime = iterator.get_next(dt.datetime)
        instant = moment.timestamp()
        if instant <= last:
            continue
        if skip_repeats and _second_occurrence(moment, tz):
            continue
        last = instant
        yield instant


def slots_after(schedule: Schedule, after: float, *, limit: int) -> list[float]:
    """At most `limit` slots strictly after `after`, ascending (fewer when `end` comes)."""
    lower, upper = _lower_bound(schedule), _upper_bound(schedule)
    if lower is not None and after < lower:
        after = lower - 1e-6  # the start itself may be a slot
    found: list[float] = []
    if limit <= 0:
        return found
    if schedule.every_s is not None:
        every, anchor = _every_us(schedule), _anchor_us(schedule)
        k = (round(after * _US) - anchor) // every + 1
        while len(found) < limit:
            slot = (anchor + k * every) / _US
            if upper is not None and slot > upper:
                break
            if slot > after:
                found.append(slot)
            k += 1
        return found
    for slot in _cron_after(schedule, after):
        if upper is not None and slot > upper:
            break
        found.append(slot)
        if len(found) >= limit:
            break
    return found


def next_slot(schedule: Schedule, after: float) -> float | None:
    """The first slot strictly after `after`, or None when the schedule has ended."""
    found = slots_after(schedule, after, limit=1)
    return found[0] if found else None


def latest_slots(schedule: Schedule, after: float, until: float, *, count: int) -> list[float]:
    """The latest `count` slots in (after, until], ascending."""
    lower, upper = _lower_bound(schedule), _upper_bound(schedule)
    if upper is not None:
        until = min(until, upper)
    if lower is not None:
        after = max(after, lower - 1e-6)
    if until <= after or count <= 0:
        return []
    if schedule.every_s is not None:
        every, anchor = _every_us(schedule), _anchor_us(schedule)
        last_k = (round(until * _US) - anchor) // every
        slots = [(anchor + k * every) / _US for k in range(last_k - count + 1, last_k + 1)]
        return [s for s in slots if after < s <= until]
    assert schedule.cron is not None
    tz = zone(schedule.timezone)
    iterator = croniter(schedule.cron, dt.datetime.fromtimestamp(until, tz))
    found: list[float] = []
    skip_repeats = not _hour_is_wildcard(schedule.cron)
    # croniter's get_prev excludes its start: a slot exactly at `until` is added first.
    if slots_after(schedule, until - 1e-6, limit=1) == [until]:
        found.append(until)
    while len(found) < count:
        moment: dt.datetime = iterator.get_prev(dt.datetime)
        instant = moment.timestamp()
        if instant <= after:
            break
        if (found and instant >= found[-1]) or (skip_repeats and _second_occurrence(moment, tz)):
            continue
        found.append(instant)
    found.reverse()
    return found


def local_time(schedule: Schedule, instant: float) -> dt.datetime:
    """An instant as an aware datetime in the schedule's time zone."""
    return dt.datetime.fromtimestamp(instant, zone(schedule.timezone))


def upcoming(schedule: Schedule, now: float, count: int = 5) -> list[dt.datetime]:
    """The next `count` fire times after `now`, in the schedule's time zone."""
    return [local_time(schedule, s) for s in slots_after(schedule, now, limit=count)]


def iso(instant: float) -> str:
    """An instant in ISO 8601, UTC (`2026-11-30T01:00:00+00:00`), as `system.logicalDate`."""
    return dt.datetime.fromtimestamp(instant, dt.UTC).isoformat()


@dataclass(frozen=True, slots=True)
class DuePlan:
    """What to do with the slots due in (after, now].

    `fire`: the slots to fire, oldest first; `skip_through`: the latest slot
    skipped (every due slot up to it is decided), or None.
    """

    fire: tuple[float, ...] = ()
    skip_through: float | None = None


def on_time(schedule: Schedule, slot: float, now: float, grace_s: float) -> bool:
    """Whether `slot`, fired at `now`, is late by no more than the tolerance."""
    following = next_slot(schedule, slot)
    tolerance = grace_s if following is None else min(grace_s, (following - slot) / 2)
    return now - slot <= tolerance


def plan_due(
    schedule: Schedule, after: float, now: float, *, grace_s: float = DEFAULT_GRACE_S
) -> DuePlan:
    """Which of the slots in (after, now] fire under `schedule.catch_up` (module docstring)."""
    window = latest_slots(schedule, after, now, count=schedule.max_catch_up + 2)
    if not window:
        return DuePlan()
    last = window[-1]
    current = on_time(schedule, last, now, grace_s)
    if schedule.catch_up is CatchUp.NONE:
        fire = [last] if current else []
    elif schedule.catch_up is CatchUp.LATEST:
        fire = [last]
    else:
        missed = window[:-1] if current else window
        fire = missed[-schedule.max_catch_up :] + ([last] if current else [])
    skipped = window[: len(window) - len(fire)]
    return DuePlan(tuple(fire), skipped[-1] if skipped else None)
