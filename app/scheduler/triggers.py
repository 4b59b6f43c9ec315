"""A cron trigger that follows the wall clock of a timezone through daylight saving changes.

APScheduler's own ``CronTrigger`` handles DST transitions in its own way; Jobplane promises one rule
(see docs/scheduling.md), implemented here:

* a wall-clock time skipped when clocks spring forward runs once, at the transition instant
  (02:30 on New York's 02:00→03:00 day runs at 03:00);
* a wall-clock time that occurs twice when clocks fall back runs once, at its first occurrence;
  nothing fires during the second pass of the repeated hour;
* a fire time is an instant: several skipped wall times that land on the same instant are one fire.

The cron fields are evaluated on naive wall-clock time (an inner ``CronTrigger`` in UTC, which has no
DST), and each wall time is then mapped to an instant.  That mapping never decreases, which is what
makes "the earliest instant at or after ``start``" well defined and cheap to find.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

#: The cron fields this trigger accepts, most significant last (APScheduler's syntax).
FIELD_NAMES = ("second", "minute", "hour", "day", "month", "day_of_week")

_MICROSECOND = timedelta(microseconds=1)
_STATE_VERSION = 1


class WallClockCronTrigger(BaseTrigger):
    """Fires when the wall clock of ``timezone`` matches the cron fields, by Jobplane's DST rule.

    Parameters:
      second, minute, hour, day, month, day_of_week(str): cron fields in APScheduler's syntax
        (``day_of_week`` as names, e.g. ``"mon-fri"``; Monday-based numbers are APScheduler's,
        not crontab's).
      timezone(ZoneInfo|str): the IANA zone whose wall clock the fields describe.
      start_date(datetime|None): aware; no fire before it.
      end_date(datetime|None): aware; no fire after it.

    Raises:
      ValueError: a field is malformed, or a date is naive.
    """

    # Plain attributes (no __slots__) and an explicit, versioned pickle state: APScheduler pickles
    # triggers into its job store, and a row written by an older release must still load.

    def __init__(self, *, second: str = "0", minute: str = "*", hour: str = "*", day: str = "*",
                 month: str = "*", day_of_week: str = "*", timezone: ZoneInfo | str,
                 start_date: datetime | None = None, end_date: datetime | None = None):
        self.fields = {"second": str(second), "minute": str(minute), "hour": str(hour),
                       "day": str(day), "month": str(month), "day_of_week": str(day_of_week)}
        self.timezone = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
        if not self.timezone.key:
            raise ValueError("timezone must be an IANA zone created by name, e.g. ZoneInfo('UTC')")
        for name, value in (("start_date", start_date), ("end_date", end_date)):
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware, e.g. datetime(..., tzinfo=ZoneInfo('UTC'))")
        self.start_date = start_date
        self.end_date = end_date
        # In UTC there is no DST, so this trigger's "UTC" times are exactly the zone's wall times.
        self._wall = CronTrigger(timezone=UTC, **self.fields)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """The earliest fire instant at or after the start point, in the trigger's zone.

        Same contract as ``CronTrigger``: the search starts at ``now``, or at the previous fire
        time plus 1 µs if that is earlier (so APScheduler can enumerate missed run times).

        Parameters:
          previous_fire_time(datetime|None): the fire time returned last, if any.
          now(datetime): the current time (aware).

        Returns:
          datetime|None: an aware datetime in ``timezone``, or None past ``end_date``.
        """
        start = now.astimezone(UTC)
        if previous_fire_time is not None:
            previous = previous_fire_time.astimezone(UTC)
            start = min(start, previous + _MICROSECOND)
            if start == previous:  # now == the previous fire time: that fire must not come back
                start += _MICROSECOND
        if self.start_date is not None:
            start = max(start, self.start_date.astimezone(UTC))
        instant = self._first_fire_at_or_after(start)
        if instant is None or (self.end_date is not None and instant > self.end_date.astimezone(UTC)):
            return None
        return instant.astimezone(self.timezone)

    def wall_times(self, fire_time: datetime, *, limit: int = 2) -> list[datetime]:
        """The scheduled wall-clock times that fire at ``fire_time``, earliest first.

        Normally one, equal to ``fire_time``'s own wall time.  After a spring-forward gap it can be
        several skipped times that all run at the transition instant.

        Parameters:
          fire_time(datetime): a fire time returned by ``get_next_fire_time``.
          limit(int): stop after this many.

        Returns:
          list[datetime]: naive wall-clock times; empty if ``fire_time`` is not a fire time.
        """
        instant = fire_time.astimezone(UTC)
        walls: list[datetime] = []
        wall = self._next_wall(self._search_start(instant))
        while wall is not None and len(walls) < limit and wall_to_instant(wall, self.timezone) == instant:
            walls.append(wall)
            wall = self._next_wall(wall + _MICROSECOND)
        return walls

    def _first_fire_at_or_after(self, start: datetime) -> datetime | None:
        """The UTC instant of the first fire at or after ``start`` (UTC)."""
        wall = self._next_wall(self._search_start(start))
        while wall is not None:
            instant = wall_to_instant(wall, self.timezone)
            # _search_start makes this the first candidate; the loop is a safety net only.
            if instant >= start:
                return instant
            wall = self._next_wall(wall + _MICROSECOND)
        return None

    def _search_start(self, start: datetime) -> datetime:
        """The earliest wall time whose instant can be at or after ``start`` (UTC), naive.

        Wall times map to instants monotonically, so this is where the cron search begins.  Two
        places differ from ``start``'s own wall time: at a spring-forward instant, the skipped wall
        times before it map onto it; during the second pass of a repeated hour, no wall time maps
        there at all, so the search begins where the repetition ends.
        """
        local = start.astimezone(self.timezone)
        wall = local.replace(tzinfo=None)
        if local.fold:
            second_pass = local.utcoffset()
            first_pass = local.replace(fold=0).utcoffset()
            whole = start.replace(microsecond=0)
            transition = transition_between(self.timezone, whole - (first_pass - second_pass), whole)
            return (transition + first_pass).replace(tzinfo=None)
        just_before = (start - _MICROSECOND).astimezone(self.timezone).replace(tzinfo=None)
        return min(wall, just_before + _MICROSECOND)

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first scheduled wall time at or after ``wall`` (naive), or None."""
        found = self._wall.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        return None if found is None else found.replace(tzinfo=None)

    def __getstate__(self) -> dict:
        return {"version": _STATE_VERSION, "fields": dict(self.fields), "timezone": self.timezone.key,
                "start_date": self.start_date, "end_date": self.end_date}

    def __setstate__(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"cannot load a {type(self).__name__} pickled as version "
                             f"{state.get('version')!r}; this release reads version {_STATE_VERSION}. "
                             "Rebuild the scheduler's job store from the jobs table.")
        self.__init__(timezone=state["timezone"], start_date=state["start_date"],
                      end_date=state["end_date"], **state["fields"])

    def __str__(self) -> str:
        fields = ", ".join(f"{name}='{self.fields[name]}'" for name in FIELD_NAMES)
        return f"wallclock-cron[{fields}, timezone='{self.timezone.key}']"

    def __repr__(self) -> str:
        options = [f"{name}='{self.fields[name]}'" for name in FIELD_NAMES]
        for name in ("start_date", "end_date"):
            if getattr(self, name) is not None:
                options.append(f"{name}='{getattr(self, name).isoformat()}'")
        options.append(f"timezone='{self.timezone.key}'")
        return f"<{type(self).__name__} ({', '.join(options)})>"


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the naive wall time ``wall`` of ``zone`` fires.

    An ambiguous wall time (clocks fall back) gives its first occurrence; a wall time that does
    not exist (clocks spring forward) gives the transition instant that ends the gap.
    """
    first = wall.replace(tzinfo=zone)  # fold=0: the first occurrence, or the pre-gap offset
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # In a gap, fold=1 reads the wall time with the offset after the transition and fold=0 with
    # the one before, so the transition lies between the two readings.
    earlier = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return transition_between(zone, earlier, instant)


def transition_between(zone: ZoneInfo, after: datetime, until: datetime) -> datetime | None:
    """The first whole-second instant in (``after``, ``until``] where ``zone``'s UTC offset changes.

    Assumes at most one transition in the window (true for any window under a few weeks).

    Returns:
      datetime|None: an aware UTC datetime, or None if the offset is the same at both ends.
    """
    low = int(after.timestamp())
    high = int(until.timestamp())
    before = _offset_at(zone, low)
    if _offset_at(zone, high) == before:
        return None
    # Bisection over seconds: about 12 steps for an hour, 17 for a day.
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, middle) == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _offset_at(zone: ZoneInfo, timestamp: int) -> timedelta:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()
