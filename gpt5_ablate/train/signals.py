"""Stop requests: SIGINT/SIGTERM set a flag the trainer checks between steps, so a checkpoint is
never cut in half; a second Ctrl-C falls back to Python's default and interrupts at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """Yields a list that receives the name of each stop signal received."""
    requested: list[str] = []
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        requested.append(signal.Signals(signum).name)
        signal.signal(signum, previous[signal.Signals(signum)])

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        previous = {}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
