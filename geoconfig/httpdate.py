"""HTTP-date parsing and formatting (RFC 9110 §5.6.7), shared by the edge and the origin.

Rules:

* Three formats are accepted (§5.6.7): IMF-fixdate ``Sun, 06 Nov 1994 08:49:37 GMT``, the
  obsolete RFC 850 form ``Sunday, 06-Nov-94 08:49:37 GMT`` and asctime ``Sun Nov  6 08:49:37
  1994``. Anything else -- including ``0``, ``-1``, empty strings and out-of-range fields
  (month 13, Feb 30, hour 24) -- is invalid and yields None; callers then apply the field's
  rule (Expires: already expired, RFC 9111 §5.3; Date: time received, RFC 9110 §6.6.1).
* Exactly the grammar: day and month names and "GMT" case-sensitive as written (%s in the
  ABNF), single spaces (asctime's day is ``SP DIGIT`` or ``2DIGIT``), two-digit day, hour,
  minute and second. Only whitespace around the whole value is ignored (it is not part of a
  field value). The day-name is required but not checked against the date; second 60 (a
  leap second) is accepted. A lenient parser is a cache's risk: two caches that read one
  Expires differently disagree on freshness.
* Two-digit years (RFC 850 form): a year more than 50 years in the future of ``now`` is the most
  recent past year with the same last two digits (§5.6.7). Without ``now`` (no clock reads
  here) the POSIX pivot is used: 69-99 -> 19xx, 00-68 -> 20xx.
* ``format_http_date`` always produces IMF-fixdate (the only format a sender may generate).
"""

from __future__ import annotations

import calendar
import re
import time

__all__ = ["format_http_date", "parse_http_date"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF = re.compile(r"([A-Za-z]{3}), ([0-9]{2}) ([A-Za-z]{3}) ([0-9]{4}) " + _TIME + r" GMT")
_RFC850 = re.compile(r"([A-Za-z]{6,9}), ([0-9]{2})-([A-Za-z]{3})-([0-9]{2}) " + _TIME +
                     r" GMT")
_ASCTIME = re.compile(r"([A-Za-z]{3}) ([A-Za-z]{3}) ( [0-9]|[0-9]{2}) " + _TIME +
                      r" ([0-9]{4})")


def _rest(m: re.Match[str]) -> tuple[str, int, int, int, int]:
    return m[3], int(m[2]), int(m[5]), int(m[6]), int(m[7])


def _build(year: int, month: str, day: int, hh: int, mm: int, ss: int) -> float | None:
    if month not in _MONTHS or not 1 <= year <= 9999:
        return None
    mon = _MONTHS.index(month) + 1
    if not (1 <= day <= calendar.monthrange(year, mon)[1] and hh < 24 and mm < 60 and ss <= 60):
        return None
    return float(calendar.timegm((year, mon, day, hh, mm, ss, 0, 0, 0)))


def parse_http_date(value: str | None, now: float | None = None) -> float | None:
    """Seconds since the epoch for a valid HTTP-date, else None. Never raises."""
    if not value or not value.isascii():
        return None
    text = value.strip(" \t")
    if m := _IMF.fullmatch(text):
        if m[1] not in _DAYS:
            return None
        return _build(int(m[4]), m[3], int(m[2]), int(m[5]), int(m[6]), int(m[7]))
    if m := _RFC850.fullmatch(text):
        if m[1] not in _LONG_DAYS:
            return None
        yy = int(m[4])
        if now is None:
            return _build(1900 + yy if yy >= 69 else 2000 + yy, *_rest(m))
        t = time.gmtime(now)
        limit_year = t.tm_year + 50
        day = min(t.tm_mday, calendar.monthrange(limit_year, t.tm_mon)[1])
        limit = calendar.timegm((limit_year, t.tm_mon, day, t.tm_hour, t.tm_min, t.tm_sec))
        limit += now - int(now)
        # the latest year ending in yy that is not more than 50 years ahead of now
        year = limit_year - (limit_year - yy) % 100
        ts = _build(year, *_rest(m))
        if ts is not None and ts > limit:
            ts = _build(year - 100, *_rest(m))
        return ts
    if m := _ASCTIME.fullmatch(text):
        if m[1] not in _DAYS:
            return None
        return _build(int(m[7]), m[2], int(m[3]), int(m[4]), int(m[5]), int(m[6]))
    return None


def format_http_date(ts: float) -> str:
    """IMF-fixdate for ``ts`` (seconds since the epoch, fractions truncated)."""
    t = time.gmtime(int(ts))
    day, month = _DAYS[t.tm_wday], _MONTHS[t.tm_mon - 1]
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return f"{day}, {t.tm_mday:02d} {month} {t.tm_year:04d} {clock} GMT"
