"""Checks of numeric command-line options, made as the command line is parsed.

click turns "nan", "inf" and "-5" into floats without a word; a watch loop given NaN seconds
never sleeps, and ``time.sleep(inf)`` raises OverflowError. Each seconds option takes
:func:`seconds` as its typer callback, so a bad value is a usage error (exit 2) before anything
is opened.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import typer

MIN_SECONDS = 0.01
"""Shorter waits would make a watch loop spin."""
MAX_INTERVAL_S = 86_400.0
"""One day: the longest wait between two passes of a watch loop."""
MAX_DURATION_S = 366 * 86_400.0
"""A year: the longest a bounded watch runs (leave the option out to run until stopped)."""


def seconds(maximum: float) -> Callable[[float | None], float | None]:
    """A typer callback refusing a number of seconds that is not finite or not within
    [MIN_SECONDS, ``maximum``]; None (the option left out) passes."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and MIN_SECONDS <= value <= maximum):
            raise typer.BadParameter(
                f"{value:g} is not a number of seconds from {MIN_SECONDS:g} to {maximum:g}"
            )
        return value

    return check


def seconds_help(maximum: float) -> str:
    """The range :func:`seconds` accepts, for an option's help."""
    return f"from {MIN_SECONDS:g} to {maximum:g}"
