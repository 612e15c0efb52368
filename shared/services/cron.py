"""Five-field cron expressions (UTC), parsed once into sets of allowed values, with errors that name the field.

    minute hour day-of-month month day-of-week        e.g. "*/5 * * * *", "0 9 * * mon-fri", "30 2 1 jan,jul *"

Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n` or `a/n`, or a comma-separated list of these;
months and weekdays also take names (`jan`, `mon`); weekday 0 and 7 are both Sunday. As in Vixie cron, when both
day-of-month and day-of-week are restricted, a day matching either one is due. Macros: `@hourly`, `@daily` /
`@midnight`, `@weekly`, `@monthly`, `@yearly` / `@annually`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class CronField:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0


FIELDS = (
    CronField("minute", 0, 59),
    CronField("hour", 0, 23),
    CronField("day of month", 1, 31),
    CronField("month", 1, 12, MONTH_NAMES, 1),
    CronField("day of week", 0, 7, WEEKDAY_NAMES, 0),
)


class CronError(ValueError):
    """A cron expression that cannot be used; the message names the field at fault."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def parse_value(text: str, field: CronField) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.names_start
    if not text.isdigit():
        accepted = f"a number {field.low}–{field.high}" + (f" or a name ({', '.join(field.names)})"
                                                            if field.names else "")
        raise CronError(field.name, f"{text!r} is not {accepted}")
    value = int(text)
    if not field.low <= value <= field.high:
        raise CronError(field.name, f"{value} is outside {field.low}–{field.high}")
    return value


def parse_field(text: str, field: CronField) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(field.name, f"{text!r} has an empty list item")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(field.name, f"step {step_text!r} in {part!r} must be a whole number of 1 or more")
            step = int(step_text)
        if base == "*":
            first, last = field.low, field.high
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            first, last = parse_value(start_text, field), parse_value(end_text, field)
            if first > last:
                raise CronError(field.name, f"range {base!r} runs backwards")
        else:
            first = parse_value(base, field)
            last = field.high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday … 6 = Saturday
    day_restricted: bool
    weekday_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        text = expression.strip() if isinstance(expression, str) else ""
        if text.startswith("@"):
            if text.lower() not in MACROS:
                raise CronError(None, f"unknown macro {text!r}; use one of {', '.join(MACROS)}")
            text = MACROS[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise CronError(None, f"expected 5 fields (minute hour day-of-month month day-of-week) or a macro "
                                  f"such as @hourly, got {len(parts)} field{'s' if len(parts) != 1 else ''}")
        minutes, hours, days, months, weekdays = (parse_field(p, f) for p, f in zip(parts, FIELDS, strict=True))
        return cls(expression, minutes, hours, days, months, frozenset(d % 7 for d in weekdays),
                   day_restricted=parts[2] != "*", weekday_restricted=parts[4] != "*")

    def matches(self, minute: datetime) -> bool:
        """Whether this schedule is due in the minute of `minute` (seconds are ignored)."""
        if minute.minute not in self.minutes or minute.hour not in self.hours or minute.month not in self.months:
            return False
        day_ok = minute.day in self.days
        weekday_ok = (minute.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok


@lru_cache(maxsize=4096)
def cron_schedule(expression: str) -> CronSchedule:
    """CronSchedule.parse, remembered: the timer checks every schedule every minute."""
    return CronSchedule.parse(expression)
