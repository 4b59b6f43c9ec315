"""Cron expressions and timezones: parsing, validation and the next fire times.

Jobplane's cron is the classic 5 fields (minute hour day month weekday), or 6 with a leading
seconds field, plus the macros ``@yearly @monthly @weekly @daily @hourly``.  Weekdays follow
crontab: 0 and 7 are Sunday, or names ``sun``–``sat``.  (APScheduler 3 numbers weekdays from
Monday; the weekday field is translated to names so that ``1-5`` means Monday to Friday, as in
every crontab.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import (
    ExpressionDescriptor,
    FormatError,
    MissingFieldError,
    Options,
    WrongArgumentError,
)

from app.errors import InvalidInput
from app.scheduler.triggers import WallClockCronTrigger, transition_between

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


def parse_cron(expression: str, timezone: str = "UTC", *, field: str = "schedule",
               start_date: datetime | None = None, end_date: datetime | None = None) -> WallClockCronTrigger:
    """A trigger for ``expression`` on the wall clock of ``timezone``, by Jobplane's DST rule.

    Parameters:
      expression(str): 5 or 6 cron fields, or a macro such as ``@daily``.
      timezone(str): an IANA zone name.
      field(str): the input field that errors about ``expression`` name.
      start_date(datetime|None): aware; no fire before it.
      end_date(datetime|None): aware; no fire after it.

    Raises:
      InvalidInput: the expression, the timezone or a date is not valid; the message names the part.
    """
    zone = parse_timezone(timezone)
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is not None and value.utcoffset() is None:
            raise InvalidInput({name: "must include a UTC offset, e.g. 2026-03-08T00:00:00+00:00"})
    second, minute, hour, day, month, weekday = _cron_fields(expression, field=field)
    try:
        return WallClockCronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                                    day_of_week=_weekday_names(weekday), timezone=zone,
                                    start_date=start_date, end_date=end_date)
    except ValueError as exc:
        raise InvalidInput({field: f"invalid cron expression {expression!r}: {exc}"}) from None


def _cron_fields(expression: str, *, field: str) -> list[str]:
    """The six fields (seconds first) of a 5- or 6-field expression or a macro."""
    expr = MACROS.get(expression.strip().lower(), expression) if isinstance(expression, str) else ""
    parts = expr.split()
    if len(parts) == 5:
        return ["0", *parts]
    if len(parts) == 6:
        return parts
    raise InvalidInput({field: f"cron expression {expression!r} has {len(parts)} fields; give 5 "
                               "(minute hour day month weekday) or 6 (seconds first), e.g. '*/5 * * * *'"})


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
    """The next ``count`` fire times of a schedule strictly after ``after``, as the scheduler fires them.

    Returns:
      list[datetime]: aware, in the schedule's zone; fewer than ``count`` if the schedule ends.

    Raises:
      InvalidInput: see ``parse_cron``.
    """
    return fire_times(parse_cron(expression, timezone), count=count, after=after)


def fire_times(trigger: WallClockCronTrigger, *, count: int, after: datetime) -> list[datetime]:
    """The next ``count`` fire times of ``trigger`` strictly after ``after`` (aware)."""
    times: list[datetime] = []
    # Called the way APScheduler calls it when each run happens on time: previous == now.
    previous, now = None, after.astimezone(UTC) + timedelta(microseconds=1)
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous = now = fire
    return times


#: Most fire times one preview returns.
MAX_PREVIEW_COUNT = 50
#: A fire time this close to a DST change gets a note: a daily job's interval is 23 or 25 hours.
_NEAR_CHANGE = timedelta(days=1)


def preview(*, schedule: str, timezone: str, count: int = 5, after: datetime | None = None) -> dict:
    """What a schedule means and when it fires next, with a note on fire times next to a DST change.

    Parameters:
      schedule(str): the cron expression, as a job would have it.
      timezone(str): the job's IANA zone.
      count(int): how many fire times, 1 to ``MAX_PREVIEW_COUNT``.
      after(datetime|None): aware; fire times strictly after it (default: now).

    Returns:
      dict: ``schedule``, ``timezone``, ``description`` and ``fire_times``, each with ``local``
      and ``utc`` ISO 8601 times and a ``dst_note`` (None when the change is irrelevant).

    Raises:
      InvalidInput: naming ``schedule``, ``timezone``, ``count`` or ``after``.
    """
    errors: dict[str, list[str]] = {}
    trigger = None
    try:
        trigger = parse_cron(schedule, timezone)
    except InvalidInput as exc:
        errors.update(exc.errors)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW_COUNT:
        errors["count"] = [f"must be a whole number from 1 to {MAX_PREVIEW_COUNT}"]
    if after is not None and after.utcoffset() is None:
        errors["after"] = ["must include a UTC offset, e.g. 2026-03-08T00:00:00+00:00"]
    if errors:
        raise InvalidInput(errors)
    fires = fire_times(trigger, count=count, after=after or datetime.now(UTC))
    return {
        "schedule": schedule,
        "timezone": timezone,
        "description": describe(schedule),
        "fire_times": [{"local": fire.isoformat(), "utc": fire.astimezone(UTC).isoformat(),
                        "dst_note": dst_note(trigger, fire)} for fire in fires],
    }


def describe(expression: str) -> str:
    """A schedule in words, 24-hour clock: ``"At 02:30, Monday through Friday"``.

    Falls back to the expression itself for what ``cron_descriptor`` cannot word (e.g. ``last``).
    """
    options = Options(locale_code="en_US", use_24hour_time_format=True)
    try:
        fields = _cron_fields(expression, field="schedule")
        if fields[3].lower() == "last":  # APScheduler's word; cron_descriptor knows it as L
            fields[3] = "L"
        return ExpressionDescriptor(" ".join(fields), options).get_description()
    except (FormatError, MissingFieldError, WrongArgumentError, InvalidInput):
        return expression


def dst_note(trigger: WallClockCronTrigger, fire: datetime) -> str | None:
    """Why a fire time is not simply its wall-clock time, or that a DST change is near; else None.

    Parameters:
      trigger: the schedule's trigger.
      fire(datetime): one of its fire times, in its zone.
    """
    zone = trigger.timezone
    fire = fire.astimezone(zone)
    wall = fire.replace(tzinfo=None)
    walls = trigger.wall_times(fire, limit=3)
    skipped = [w for w in walls if w < wall]
    if skipped:
        change = _describe_change(zone, fire.astimezone(UTC))
        if len(skipped) > 1:
            return (f"{_clock(skipped[0])} and the later scheduled times before {_clock(wall)} do not "
                    f"exist ({change}); they run once, at {_clock(wall)}")
        also = f", once, together with the {_clock(wall)} run" if wall in walls else ""
        return f"{_clock(skipped[0])} does not exist ({change}); runs at {_clock(wall)}{also}"
    first_pass, second_pass = fire.utcoffset(), fire.replace(fold=1).utcoffset()
    if first_pass != second_pass:
        transition = transition_between(zone, fire, fire + (first_pass - second_pass))
        return (f"{_clock(wall)} occurs twice ({_describe_change(zone, transition)}); runs once, "
                f"at the first {_clock(wall)} ({fire.tzname()})")
    instant = fire.astimezone(UTC)
    transition = (transition_between(zone, instant - _NEAR_CHANGE, instant)
                  or transition_between(zone, instant, instant + _NEAR_CHANGE))
    if transition is not None:
        return f"within a day of a DST change ({_describe_change(zone, transition)})"
    return None


def _describe_change(zone: ZoneInfo, transition: datetime) -> str:
    """``"clocks spring forward from 02:00 to 03:00 on 2026-03-08"``, for a transition instant."""
    after = transition.astimezone(zone)
    before = (transition - timedelta(microseconds=1)).astimezone(zone).replace(tzinfo=None) \
        + timedelta(microseconds=1)
    direction = "spring forward" if after.replace(tzinfo=None) > before else "fall back"
    return f"clocks {direction} from {_clock(before)} to {_clock(after)} on {after.date().isoformat()}"


def _clock(wall: datetime) -> str:
    return wall.strftime("%H:%M:%S" if wall.second else "%H:%M")
