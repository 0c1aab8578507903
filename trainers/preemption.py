"""Stopping a run on request: SIGTERM (a scheduler's preemption, an eviction, a spot reclaim)
or SIGINT (Ctrl-C) asks the loop to stop at its next step boundary with a checkpoint.

Slurm, Kubernetes and cloud spot instances send SIGTERM and allow a grace period before they
kill. While a run trains, the first signal sets ``StopRequest.requested``; the loop then
finishes the step it is in, writes a checkpoint of it and raises ``Preempted``, so the same
command resumes where it stopped. Should that take longer than ``grace_s`` (or a second signal
come), the process exits at once with status 128 + the signal's number, as the default
handler would have.
"""

from __future__ import annotations

import os
import signal
import threading

from trainers.errors import TrainingError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(TrainingError):
    """The run stopped on request at a checkpoint of ``step``; the same command resumes it."""

    def __init__(self, step: int, signum: int):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step} with a checkpoint; the same command resumes the run"
        )
        self.step, self.signum = step, signum
        self.exit_code = 128 + signum  # what the signal's default handler would have exited with

    def __reduce__(self) -> tuple:  # rebuilt from its arguments across processes (Ray, spawn)
        return Preempted, (self.step, self.signum)


class StopRequest:
    """Catches SIGTERM and SIGINT inside a ``with`` block (in the main thread only: signal
    handlers can be set nowhere else, and a thread's run then simply is not stoppable)."""

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.requested = False
        self.signum = signal.SIGTERM  # the signal that asked, once one has
        self._previous: dict[int, object] = {}
        self._deadline: threading.Timer | None = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        if self._deadline is not None:
            self._deadline.cancel()

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:  # asked twice: stop now
            os._exit(128 + signum)
        self.requested = True
        self.signum = signum
        self._deadline = threading.Timer(self.grace_s, os._exit, args=(128 + signum,))
        self._deadline.daemon = True
        self._deadline.start()
