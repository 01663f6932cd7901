"""HTTP-date parsing and formatting for the origin (RFC 9110 §5.6.7). Pure functions.

Rules:

* ``parse_http_date`` accepts the three forms of §5.6.7 -- IMF-fixdate
  ``Sun, 06 Nov 1994 08:49:37 GMT``, RFC 850 ``Sunday, 06-Nov-94 08:49:37 GMT`` and asctime
  ``Sun Nov  6 08:49:37 1994`` -- and returns whole seconds since the epoch. Anything else
  (other zones, numeric offsets, out-of-range fields, a list of dates, non-ASCII) is invalid
  and yields None; it never raises. Names and "GMT" are matched case-insensitively and runs of
  spaces are tolerated; the day name is required but not checked against the date.
* RFC 850 two-digit years: a year that would be more than 50 years after ``now`` is taken
  from the previous century (§5.6.7).
* ``format_http_date`` always writes IMF-fixdate, the only form a sender may generate.
"""

from __future__ import annotations

import calendar
import re
import time

__all__ = ["format_http_date", "parse_http_date"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CLOCK = r"(\d\d):(\d\d):(\d\d)"
_IMF = re.compile(r"([a-z]{3}), (\d\d) ([a-z]{3}) (\d{4}) " + _CLOCK + " gmt")
_RFC850 = re.compile(r"([a-z]{6,9}), (\d\d)-([a-z]{3})-(\d\d) " + _CLOCK + " gmt")
_ASCTIME = re.compile(r"([a-z]{3}) ([a-z]{3}) (\d{1,2}) " + _CLOCK + r" (\d{4})")
_SPACES = re.compile(r"[ \t]+")


def _timestamp(year: int, month: str, day: int, clock: tuple[str, str, str]) -> int | None:
    hh, mm, ss = (int(v) for v in clock)
    if month not in _MONTHS or not 1 <= year <= 9999:
        return None
    mon = _MONTHS.index(month) + 1
    if not (1 <= day <= calendar.monthrange(year, mon)[1] and hh < 24 and mm < 60 and ss <= 60):
        return None
    return calendar.timegm((year, mon, day, hh, mm, ss, 0, 0, 0))


def parse_http_date(value: str | None, now: float | None = None) -> int | None:
    """Whole seconds since the epoch for a valid HTTP-date, else None."""
    if not value or not value.isascii():
        return None
    text = _SPACES.sub(" ", value.strip()).lower()
    if (m := _IMF.fullmatch(text)) and m[1] in _DAYS:
        return _timestamp(int(m[4]), m[3], int(m[2]), (m[5], m[6], m[7]))
    if (m := _RFC850.fullmatch(text)) and m[1] in _LONG_DAYS:
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        year = 2000 + int(m[4])
        while year > this_year + 50:
            year -= 100
        return _timestamp(year, m[3], int(m[2]), (m[5], m[6], m[7]))
    if (m := _ASCTIME.fullmatch(text)) and m[1] in _DAYS:
        return _timestamp(int(m[7]), m[2], int(m[3]), (m[4], m[5], m[6]))
    return None


def format_http_date(ts: float) -> str:
    """IMF-fixdate for ``ts`` (seconds since the epoch; fractions are truncated)."""
    t = time.gmtime(int(ts))
    return (f"{_DAYS[t.tm_wday].title()}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1].title()} "
            f"{t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
