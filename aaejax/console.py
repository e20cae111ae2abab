"""What a run shows on the terminal and how it is stopped: the progress line, SIGINT/SIGTERM
turned into a stop at the next chunk boundary, and library warnings that say nothing actionable
dropped."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)


class Progress:
    """A one-line progress bar with ETA on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.tty, self.enabled = total, sys.stderr.isatty(), enabled

    def update(self, step: int, rate: float, scalars: dict) -> None:
        if not self.enabled:
            return
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if not k.startswith("lr"))
        line = f"step {step}/{self.total} [{100 * step / max(self.total, 1):3.0f}%] {rate:.1f} steps/s ETA {eta_s} {shown}"
        if self.tty:
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
            sys.stderr.flush()
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and self.enabled:
            sys.stderr.write("\n")


class StopOnSignal:
    """`with StopOnSignal() as stop:` SIGINT/SIGTERM set `stop.signum`, which the loop checks at
    each chunk boundary, where the state is whole and gets checkpointed; a second signal
    interrupts at once."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.signum = signum
        log.warning("signal %d: stopping after the current chunk (again to stop now)", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


@contextlib.contextmanager
def without_log_messages(logger: str, fragment: str):
    """Inside the block, drops `logger`'s records whose message contains `fragment`."""
    keep = lambda record: fragment not in record.getMessage()  # noqa: E731 - logging takes callables
    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)
