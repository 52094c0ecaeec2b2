"""A clock the test moves by hand, for the scheduler (services/scheduler.py `Clock`).

`sleep_until` returns once the test has moved the time to the deadline;
`asleep()` waits until someone sleeps on it (the scheduler is between passes).
"""

from __future__ import annotations

import asyncio


class ManualClock:
    def __init__(self, start: float) -> None:
        self._now = start
        self._changed = asyncio.Condition()
        self.sleepers = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        async with self._changed:
            self.sleepers += 1
            self._changed.notify_all()
            try:
                await self._changed.wait_for(lambda: self._now >= deadline)
            finally:
                self.sleepers -= 1

    async def set(self, moment: float) -> None:
        async with self._changed:
            self._now = moment
            self._changed.notify_all()

    async def asleep(self) -> None:
        async with asyncio.timeout(30), self._changed:
            await self._changed.wait_for(lambda: self.sleepers > 0)
