"""Options that several commands share, and the range checks that turn a value chunkstore
cannot hold into a one-line usage error (exit 2) before anything is opened."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import NoReturn

import click

from chunkstore.errors import InvalidArgumentError
from chunkstore.operations import history

# Versions, counts and times are stored as signed 64-bit integers (SQLite INTEGER,
# DynamoDB numbers read back as int64): a larger value fails deep in a catalog.
INT64_MAX = 2**63 - 1

# Threads or requests in flight: more than this only costs memory and file descriptors.
CONCURRENCY = click.IntRange(1, 1024)

# Times are nanoseconds since 1970 in a signed 64-bit integer: 1970-01-01 to 2262-04-11.
_EARLIEST_TIME = "1970-01-01"
_LATEST_TIME = "2262-04-11"

# forget --keep-within measures back from the newest point; a year-1 date is as far as the
# calendar goes, and anything past the stored times (about 290 years) already keeps all.
MAX_DURATION_YEARS = 1000

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)


def count_option(*names: str, **options):
    """A version number or a count: from 1 to the largest integer a catalog stores. (The upper
    limit is checked in a callback so that --help shows `x>=1`, not a 19-digit bound.)"""
    return click.option(*names, type=click.IntRange(min=1), callback=_at_most_int64, **options)


def _at_most_int64(_context, _parameter, value: int | None) -> int | None:
    if value is not None and value > INT64_MAX:
        raise click.BadParameter(f"{value} is larger than any number chunkstore stores ({INT64_MAX})")
    return value


def parse_size(text: str) -> int:
    """`65536`, `64K`, `64KiB`, `1M`: binary multiples."""
    match = _SIZE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a size (examples: 65536, 64K, 1MiB)")
    number, unit = int(match.group(1)), match.group(2).lower()
    size = number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    if size > INT64_MAX:
        raise click.BadParameter(f"{text!r} is larger than any size chunkstore handles (8 EiB)")
    return size


def checked_by(parse: Callable[[str], object]) -> Callable:
    """An option callback that parses a given value with parse; the library's
    InvalidArgumentError becomes click's usage error, which names the option (exit 2)."""

    def callback(_context, _parameter, value):
        if value is None:
            return None
        try:
            return parse(value)
        except InvalidArgumentError as error:
            raise click.BadParameter(str(error)) from None

    return callback


def size_option(*names: str, **options):
    return click.option(*names, metavar="BYTES", callback=checked_by(parse_size), **options)


def _checked_time_ns(text: str, at_ns: int) -> int:
    if not 0 <= at_ns <= INT64_MAX:
        _out_of_range(text)
    return at_ns


def _out_of_range(text: str) -> NoReturn:
    raise click.BadParameter(f"{text!r} is outside the times chunkstore records ({_EARLIEST_TIME} to {_LATEST_TIME})")


def parse_time(text: str) -> int:
    """A --time value: its first instant, as UTC nanoseconds within the stored range."""
    return _checked_time_ns(text, history.parse_time(text, end_of_day=False))


def parse_as_of(text: str) -> history.AsOf | str:
    """A time for --as-of, --from, --to: a date or date-time is checked and resolved now;
    anything else is left for resolve_as_of, once the store (and its snapshots) is open:
    a snapshot ID, or a mistake that it explains."""
    instants = []
    # Both ends of a date are checked: only one of them may exist on the calendar (the
    # start of 0001-01-01 in a zone east of UTC, the end of 9999-12-31), and both must fit.
    for end_of_day in (False, True):
        with contextlib.suppress(InvalidArgumentError):
            instants.append(_checked_time_ns(text, history.parse_time(text, end_of_day=end_of_day)))
    if not instants:
        return text
    if len(instants) == 1:
        _out_of_range(text)
    return history.AsOf(instants[1])


def resolve_as_of(store, value: history.AsOf | str) -> history.AsOf:
    """The point in time an option parsed by parse_as_of names."""
    return value if isinstance(value, history.AsOf) else history.resolve_as_of(store, value)


def time_point_option(*names: str, what: str, **options):
    """An option naming a point in time or a snapshot (--as-of, --from, --to)."""
    return click.option(*names, metavar="TIME|SNAPSHOT", callback=checked_by(parse_as_of), help=what, **options)


def as_of_option(what: str):
    """--as-of TIME|SNAPSHOT: what the command shows, as it was then."""
    return time_point_option(
        "--as-of",
        "as_of",
        what=f"{what} as of a past time: a date (2026-11-20: the end of that day), a date-time "
        "(2026-11-20T03:00, local unless it ends in Z or +HH:MM), or a snapshot ID or unique prefix "
        "of one (`chunkstore snapshots`).",
    )


def parse_duration(text: str) -> history.Duration:
    duration = history.Duration.parse(text)
    years = duration.years + duration.months / 12 + duration.days / 365.25 + duration.hours / 8766
    if years > MAX_DURATION_YEARS:
        raise click.BadParameter(f"{text!r} is longer than {MAX_DURATION_YEARS} years")
    return duration


def s3_source(value: str) -> str:
    """An s3://BUCKET[/PREFIX] argument, checked."""
    from chunkstore.apps.bucket import parse_s3_url

    parse_s3_url(value)
    return value


LOG_FORMAT_OPTION = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one line per object; json: the Lambda function's structured log lines "
    "(needs aws-lambda-powertools: pip install 'chunkstore[lambda]').",
)
