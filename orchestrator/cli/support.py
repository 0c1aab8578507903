"""What every ``gammaray`` command shares: the one-line user error, JSON output, common options."""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from trainers.errors import ConfigError

USER_ERROR_EXIT = 2


def fail(message: str) -> None:
    click.echo(f"gammaray: error: {message}", err=True)
    sys.exit(USER_ERROR_EXIT)


def user_errors(command: Callable) -> Callable:
    """Report the project's own exceptions as one line and exit 2; let bugs raise."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:

        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            fail(str(error))

    return wrapper


def print_json(document: dict[str, Any]) -> None:
    """One JSON document on the last line of stdout (NaN and inf become null)."""
    click.echo(json.dumps(_finite(document), default=str))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set init.gamma=0.5 (repeatable).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document as the last stdout line."
)


class sigterm_as_interrupt:
    """Turn SIGTERM into KeyboardInterrupt inside the block, so a driver stops its Ray tasks and
    records why before it exits; ``signum`` is then the signal that stopped it (SIGINT for
    Ctrl-C)."""

    def __enter__(self) -> sigterm_as_interrupt:
        self.previous = None
        self.signum = signal.SIGINT
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def _raise_interrupt(self, signum: int, frame: object) -> None:
        self.signum = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)
