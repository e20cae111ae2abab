"""What a run shows on the terminal and how it is stopped: the progress line, SIGINT/SIGTERM
turned into a stop at the next chunk boundary, and library warnings that say nothing actionable
dropped."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time

from aaejax.run import files

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """HH:MM:SS, with whole days in front past 24 hours ("1d 03:00:00")."""
    if not math.isfinite(seconds):
        return "?"
    days, rest = divmod(int(seconds), 86400)
    return (f"{days}d " if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))


class StatusLine:
    """A status line on stderr: rewritten in place on a terminal; elsewhere (a log file) every
    line printed, or with transient=True only the last one, at close. The one progress display."""

    def __init__(self, enabled: bool = True, transient: bool = False):
        self.enabled, self.transient, self.tty = enabled, transient, sys.stderr.isatty()

    def show(self, line: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
            sys.stderr.flush()
        elif not self.transient:
            print(line, file=sys.stderr, flush=True)

    def close(self, last: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write(("\r" + last[:200] + "\x1b[K" if last else "") + "\n")
        elif last and self.transient:
            print(last, file=sys.stderr, flush=True)


class Progress:
    """The training's status line: step, percent, rate, ETA and the latest metrics."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.line = total, StatusLine(enabled)

    def update(self, step: int, rate: float, scalars: dict) -> None:
        eta_s = duration((self.total - step) / rate if rate > 0 else float("nan"))
        shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if not k.startswith("lr"))
        self.line.show(f"step {step}/{self.total} [{100 * step / max(self.total, 1):3.0f}%] {rate:.1f} steps/s "
                       f"ETA {eta_s} {shown}")

    def close(self) -> None:
        self.line.close()


class StopOnSignal:
    """`with StopOnSignal() as stop:` SIGINT/SIGTERM set `stop.signum`, which the loop checks at
    each chunk boundary, where the state is whole and gets checkpointed; a second signal
    interrupts at once."""

    def __init__(self):
        self.signum = None
        self._previous = {}
        self._stderr = None  # fd 2 as it was on entry: a save captures fd 2 while it runs

    def __call__(self, signum, frame):
        if self.signum is not None:
            # At once, even while the main thread waits on the device: the checkpoints already
            # committed are whole (a save cut short leaves only orbax's temporary folder).
            _last_words(self._stderr, f"signal {signum} again: exiting now without saving; the same command "
                                      f"resumes from the last checkpoint")
            files.remove_in_flight()
            os._exit(128 + signum)
        self.signum = signum
        log.warning("signal %d: stopping after the current chunk (again to stop now)", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._stderr = os.dup(2)
            self._previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self._stderr is not None:
            os.close(self._stderr)
            self._stderr = None
        return False


def _last_words(fd: int | None, line: str) -> None:
    """`line` on its own line, to `fd` (a copy of the terminal's stderr) when given."""
    sys.stderr.flush()
    text = f"\n{line}\n"
    if fd is None:
        sys.stderr.write(text)
        sys.stderr.flush()
    else:
        os.write(fd, text.encode())


def exit_on_signal() -> None:
    """From the first instant of a command: SIGINT / SIGTERM end the process at once with one line
    and status 128 + signal (130 for Ctrl-C), never a traceback from whatever was importing. The
    training loop puts StopOnSignal in its place while it runs."""
    def handler(signum, frame):
        _last_words(None, f"interrupted by signal {signum}: exiting; nothing is being saved now (a run resumes "
                          f"from its last checkpoint)")
        files.remove_in_flight()
        os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, handler)


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
