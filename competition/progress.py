"""Progress of long work: a bar on a terminal; piped (a log file, CI, a notebook's captured
stderr), a plain line at most every PIPED_EVERY seconds, so a step that takes a while still
says where it is without filling a log with carriage returns. Quick work prints nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

PIPED_EVERY = 10.0  # seconds between two lines when stderr is not a terminal


def steps(
    iterable: Iterable, desc: str, total: int | None = None, unit: str = "it", enabled: bool = True, leave: bool = True
) -> Iterable:
    """`iterable`, reporting its progress (see the module docstring); as it is when not `enabled`."""
    if not enabled:
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave)
    return _lines(iterable, desc, total, unit)


def _lines(iterable: Iterable, desc: str, total: int | None, unit: str) -> Iterator:
    started = last = time.monotonic()
    done, said = 0, 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= PIPED_EVERY:
            _say(desc, done, total, unit, now - started)
            last, said = now, done
    if 0 < said < done:  # a step long enough to report also reports its end
        _say(desc, done, total, unit, time.monotonic() - started)


def _say(desc: str, done: int, total: int | None, unit: str, seconds: float) -> None:
    print(f"{desc}: {done}/{total if total is not None else '?'} {unit} ({seconds:.0f} s)", file=sys.stderr, flush=True)
