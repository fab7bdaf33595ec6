"""Local time for schedules: quiet hours, reminder windows, the quota day. One time zone per deployment.

Functions take ``now`` (epoch seconds) explicitly where a caller may want another time than the
wall clock: the scheduler's sweeps, the demo's accelerated day, and tests.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

_zone = ZoneInfo("Asia/Shanghai")


def set_timezone(name: str) -> None:
    global _zone
    _zone = ZoneInfo(name)


def zone() -> ZoneInfo:
    return _zone


def now() -> float:
    return time.time()


def local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, _zone)


def day_key(ts: float) -> str:
    """The local day of ``ts`` as YYYYMMDD (quota and family-cap counters)."""
    return local(ts).strftime("%Y%m%d")


def _minutes(clock: str) -> int:
    h, m = clock.split(":")
    return int(h) * 60 + int(m)


def in_window(ts: float, start: str, end: str) -> bool:
    """Is ``ts`` inside [start, end) local time? A window may wrap midnight (21:30–07:00);
    equal ends make an empty window (e.g. quiet hours switched off)."""
    t = local(ts)
    m, a, b = t.hour * 60 + t.minute, _minutes(start), _minutes(end)
    return a <= m < b if a <= b else (m >= a or m < b)


def next_at(ts: float, clock: str) -> float:
    """The first moment at or after ``ts`` whose local time is ``clock``."""
    t = local(ts)
    mins = _minutes(clock)
    candidate = t.replace(hour=mins // 60, minute=mins % 60, second=0, microsecond=0)
    if candidate < t:
        candidate += timedelta(days=1)
    return candidate.timestamp()


def into_window(ts: float, start: str, end: str) -> float:
    """``ts`` if it is inside the window, else the next opening of the window."""
    return ts if in_window(ts, start, end) else next_at(ts, start)


def next_midnight(ts: float) -> float:
    return next_at(ts + 1, "00:00")


def fmt(ts: float) -> str:
    """A short local time for people: 11月23日 18:00."""
    t = local(ts)
    return f"{t.month}月{t.day}日 {t.hour:02d}:{t.minute:02d}"
