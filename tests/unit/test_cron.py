"""Cron expressions: errors name the field at fault, macros work, matching follows Vixie cron."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.services.cron import CronError, CronSchedule

MONDAY_0915 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)  # 2026-03-02 is a Monday


@pytest.mark.parametrize(("expression", "message"), [
    ("61 * * * *", "minute: 61 is outside 0–59"),
    ("* 24 * * *", "hour: 24 is outside 0–23"),
    ("* * 0 * *", "day of month: 0 is outside 1–31"),
    ("* * * 13 *", "month: 13 is outside 1–12"),
    ("* * * * 8", "day of week: 8 is outside 0–7"),
    ("* * * foo *", "month: 'foo' is not a number 1–12 or a name (jan, feb"),
    ("*/0 * * * *", "minute: step '0' in '*/0' must be a whole number of 1 or more"),
    ("5-1 * * * *", "minute: range '5-1' runs backwards"),
    ("1,,2 * * * *", "minute: '1,,2' has an empty list item"),
    ("0 * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @hourly, got 6"),
    ("", "got 0 fields"),
    ("@every5m", "unknown macro '@every5m'"),
])
def test_errors_name_the_field(expression, message):
    with pytest.raises(CronError) as caught:
        CronSchedule.parse(expression)
    assert message in str(caught.value)


@pytest.mark.parametrize(("macro", "due", "not_due"), [
    ("@hourly", datetime(2026, 3, 2, 7, 0), datetime(2026, 3, 2, 7, 1)),
    ("@daily", datetime(2026, 3, 2, 0, 0), datetime(2026, 3, 2, 1, 0)),
    ("@midnight", datetime(2026, 3, 3, 0, 0), datetime(2026, 3, 3, 0, 30)),
    ("@weekly", datetime(2026, 3, 1, 0, 0), datetime(2026, 3, 2, 0, 0)),  # Sunday, then Monday
    ("@monthly", datetime(2026, 4, 1, 0, 0), datetime(2026, 4, 2, 0, 0)),
    ("@yearly", datetime(2027, 1, 1, 0, 0), datetime(2027, 2, 1, 0, 0)),
    ("@ANNUALLY", datetime(2027, 1, 1, 0, 0), datetime(2027, 1, 1, 0, 1)),
])
def test_macros(macro, due, not_due):
    schedule = CronSchedule.parse(macro)
    assert schedule.matches(due) and not schedule.matches(not_due)


def test_fields_lists_ranges_steps_and_names():
    assert CronSchedule.parse("*/5 * * * *").minutes == frozenset(range(0, 60, 5))
    assert CronSchedule.parse("10-20/5,59 * * * *").minutes == frozenset({10, 15, 20, 59})
    assert CronSchedule.parse("30/10 * * * *").minutes == frozenset({30, 40, 50})
    assert CronSchedule.parse("0 9 * jan,JUL mon-fri").months == frozenset({1, 7})
    assert CronSchedule.parse("0 9 * * mon-fri").weekdays == frozenset({1, 2, 3, 4, 5})
    assert CronSchedule.parse("0 0 * * 7").weekdays == frozenset({0})  # 7 is Sunday too


def test_matching():
    assert CronSchedule.parse("15 9 * * 1").matches(MONDAY_0915)
    assert not CronSchedule.parse("15 9 * * 2").matches(MONDAY_0915)
    assert CronSchedule.parse("15 9 * * mon").matches(MONDAY_0915.replace(second=59))
    # both day fields restricted: either one is enough (Vixie cron); one restricted: it alone decides
    assert CronSchedule.parse("15 9 13 * mon").matches(MONDAY_0915)
    assert CronSchedule.parse("15 9 2 * fri").matches(MONDAY_0915)
    assert not CronSchedule.parse("15 9 13 * fri").matches(MONDAY_0915)
    assert not CronSchedule.parse("15 9 13 * *").matches(MONDAY_0915)
