"""Cron expressions and timezones: parsing, validation and the next fire times.

Jobplane's cron is the classic 5 fields (minute hour day month weekday), or 6 with a leading
seconds field, plus the macros ``@yearly @monthly @weekly @daily @hourly``.  Weekdays follow
crontab: 0 and 7 are Sunday, or names ``sun``–``sat``.  (APScheduler 3 numbers weekdays from
Monday; the weekday field is translated to names so that ``1-5`` means Monday to Friday, as in
every crontab.)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from app.errors import InvalidInput

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def parse_timezone(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The IANA zone called ``name``.

    Raises:
      InvalidInput: not an IANA timezone name.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise InvalidInput({field: "must be an IANA timezone name such as UTC or Europe/Berlin"})
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput({field: f"unknown timezone {name!r}; use an IANA name such as "
                                   "UTC, America/New_York or Europe/Berlin"}) from None


def parse_cron(expression: str, timezone: str = "UTC", *, field: str = "schedule") -> CronTrigger:
    """A trigger for ``expression`` in ``timezone``.

    Raises:
      InvalidInput: the expression or the timezone is not valid; the message names the part.
    """
    zone = parse_timezone(timezone)
    expr = MACROS.get(expression.strip().lower(), expression) if isinstance(expression, str) else ""
    parts = expr.split()
    if len(parts) == 5:
        second, (minute, hour, day, month, weekday) = "0", parts
    elif len(parts) == 6:
        second, minute, hour, day, month, weekday = parts
    else:
        raise InvalidInput({field: f"cron expression {expression!r} has {len(parts)} fields; give 5 "
                                   "(minute hour day month weekday) or 6 (seconds first), e.g. '*/5 * * * *'"})
    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_weekday_names(weekday), timezone=zone)
    except ValueError as exc:
        raise InvalidInput({field: f"invalid cron expression {expression!r}: {exc}"}) from None


def _weekday_names(field: str) -> str:
    """Translate a crontab weekday field (0/7 = Sunday) into APScheduler's day names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"weekday step {step_text!r} must be a positive number")
        if rng == "*":
            first, last = 0, 6
        elif "-" in rng:
            first_text, last_text = rng.split("-", 1)
            first, last = _day_number(first_text), _day_number(last_text)
            if last == 0 and first > 0:
                last = 7  # "5-0" / "fri-sun": through Sunday
            if first > last:
                raise ValueError(f"weekday range {rng!r} runs backwards")
        else:
            first = last = _day_number(rng)
            if step:
                last = 6
        days.update(d % 7 for d in range(first, last + 1, step or 1))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def _day_number(text: str) -> int:
    text = text.strip().lower()
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text[:3] in _DAY_NAMES and len(text) == 3:
        return _DAY_NAMES.index(text[:3])
    raise ValueError(f"weekday {text!r} must be 0-7 (0 and 7 are Sunday) or sun-sat")


def next_fire_times(expression: str, timezone: str, *, count: int, after: datetime) -> list[datetime]:
    """The next ``count`` fire times of a schedule strictly after ``after``."""
    trigger = parse_cron(expression, timezone)
    times: list[datetime] = []
    previous = None
    now = after
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        if fire > after:
            times.append(fire)
        previous, now = fire, fire + timedelta(microseconds=1)
    return times
