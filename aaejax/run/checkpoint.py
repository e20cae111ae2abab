"""Orbax checkpoints of the whole TrainState, plus a JSON record of the model and its config.

Saves go through orbax's commit protocol (a step directory appears only when complete) and are
synchronous, so a failed save (a full disk) is reported at its step, in the main thread, as one
`WriteError` (the training loop saves a device copy of the state while the next chunk runs); temporary directories a failed save left are removed when a run opens the folder.
Restores try the newest step first and fall back to older
ones when it is unreadable; a work dir whose checkpoints are all unreadable is an error, never a
silent fresh start. A resumed run moves the unreadable newer steps aside (`set_aside`) rather than
deleting them, so it can save those step numbers again and nothing on disk is lost.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from aaejax.run import console, parallel
from aaejax.run.files import WriteError

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, directory: str | Path, max_to_keep: int = 3, keep_steps=(), read_only: bool = False):
        """Keeps the newest `max_to_keep` steps, and every step in `keep_steps` for good.
        `read_only` (aaejax.load, evaluate): never creates, cleans or deletes anything, so it may
        read a dir a run is writing."""
        self.directory = Path(directory).absolute()
        common = dict(create=not read_only, read_only=read_only, enable_async_checkpointing=False,
                      cleanup_tmp_directories=not read_only)
        if read_only:  # what orbax would otherwise warn it sets itself
            common.update(save_interval_steps=0)
            max_to_keep, keep_steps = None, ()
        if keep_steps:
            policies = ocp.checkpoint_managers
            options = ocp.CheckpointManagerOptions(**common, preservation_policy=policies.AnyPreservationPolicy(
                [policies.LatestN(max_to_keep), policies.CustomSteps([int(s) for s in keep_steps])]))
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, **common)
        # Orbax warns that a read-only manager's directory "is read only": that is the point.
        with console.without_log_messages("absl", "is read only"):
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, meta: dict) -> None:
        """Saves and commits step `step`, with the state's digest in its meta (checked on
        restore); an OS error (a full disk) is raised as WriteError."""
        digest = state_digest(state)
        if digest is not None:
            meta = {**meta, "state_sha256": digest}
        with _quiet_orbax() as noise:
            try:
                self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                 meta=ocp.args.JsonSave(meta)), force=True)
            except Exception as e:  # noqa: BLE001 - orbax wraps OS errors in ValueError and others
                try:  # let orbax's helper threads end now, not at interpreter exit
                    self._manager.wait_until_finished()
                except Exception:  # noqa: BLE001 - the same failure, already being reported
                    pass
                gc.collect()  # orbax's failed write futures are logged when collected: now, while captured
                noise.drop()
                raise WriteError(_reason(e), self.directory / str(step)) from e

    def read_meta(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, target, check_meta=None, step: int | None = None):
        """Restores the newest readable step (or just `step`) into the structure (and devices)
        of `target`.

        check_meta(meta) may raise to refuse a checkpoint of another model or config.
        Returns (state, step), or (None, None) when the directory holds no checkpoint.
        """
        steps = self.steps()
        if step is not None:
            if step not in steps:
                raise CheckpointError(f"{self.directory} holds no checkpoint of step {step} (it has {steps})")
            steps = [step]
        if not steps:
            return None, None
        errors = []
        for step in reversed(steps):
            try:
                meta = self.read_meta(step)
            except Exception as e:  # noqa: BLE001 - an unreadable step: try the previous one
                reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
                errors.append(f"step {step}: {reason}")
                log.warning("checkpoint step %d is unreadable (%s); trying an older one", step, reason)
                continue
            if check_meta is not None:
                check_meta(meta)  # a mismatch is the user's to resolve, not to fall back from
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target)))["state"]
                _verify(restored, meta)
                return restored, step
            except Exception as e:  # noqa: BLE001
                reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
                errors.append(f"step {step}: {reason}")
                log.warning("checkpoint step %d is unreadable (%s); trying an older one", step, reason)
        raise CheckpointError(f"no readable checkpoint in {self.directory}: " + " | ".join(errors))

    def set_aside(self, steps, move: bool = True) -> None:
        """Moves the step directories `steps` (unreadable ones) to `<dir>_unreadable/<step>`.

        Orbax refuses to save a step that exists, so a run resumed from an older step would fail
        when it reaches the unreadable one again. In a multi-process run every process calls
        this, and only the one with `move` (process 0) touches the files.
        """
        if not steps:
            return
        aside = self.directory.with_name(self.directory.name + "_unreadable")
        parallel.sync("aaejax: checkpoints restored")  # no process still reads what moves
        for step in steps if move else ():
            aside.mkdir(exist_ok=True)
            target, n = aside / str(step), 0
            while target.exists():  # one set aside before: keep both
                n += 1
                target = aside / f"{step}.{n}"
            shutil.move(str(self.directory / str(step)), str(target))
            log.warning("moved unreadable checkpoint step %d to %s", step, target)
        parallel.sync("aaejax: unreadable checkpoints set aside")
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


class CorruptCheckpoint(ValueError):
    """A checkpoint that reads, but not as it was written (its digest differs, or it holds NaN/Inf)."""


def state_digest(state) -> str | None:
    """SHA-256 of the state's arrays as bytes, in tree order; None where this process cannot see
    every array whole (a multi-process run)."""
    import hashlib

    import jax
    import numpy as np

    leaves = jax.tree_util.tree_leaves(state)
    if any(not getattr(x, "is_fully_addressable", True) for x in leaves):
        return None
    h = hashlib.sha256()
    for x in jax.device_get(leaves):
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _verify(state, meta: dict) -> None:
    """Raises CorruptCheckpoint when the restored state's digest is not the saved one, or (for
    checkpoints saved before digests) when a float in it is not finite."""
    import jax
    import numpy as np

    if any(not getattr(x, "is_fully_addressable", True) for x in jax.tree_util.tree_leaves(state)):
        return  # a multi-process run's arrays: no process sees them whole (and none was digested)
    saved = meta.get("state_sha256")
    if saved is not None:
        digest = state_digest(state)
        if digest is not None and digest != saved:
            raise CorruptCheckpoint("its arrays differ from what was saved (SHA-256 mismatch)")
        return
    for x in jax.device_get(jax.tree_util.tree_leaves(state)):
        if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.all(np.isfinite(x)):
            raise CorruptCheckpoint("it holds NaN or Inf")


def _reason(error: Exception) -> str:
    """A short reason for a failed save: orbax's messages name every internal file."""
    text = str(error)
    match = re.search(r"os_error_code='?(\d+)", text)
    if match:
        code = int(match.group(1))
        return f"{os.strerror(code)} (errno {code})"
    for cause in (error.__cause__, error.__context__):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return text.splitlines()[0][:200] if text else type(error).__name__


def _filter_late_reports():
    """A failed save leaves orbax's other writes in flight; they end in other threads, at any time
    from then on, and report into orbax's closed event loop: as log records (asyncio,
    concurrent.futures) or, from tensorstore's threads, as unraisable RuntimeErrors. Installs
    filters for exactly those; returns what removes them again (nothing to remove when a failed
    save's filters are already in place, for good)."""
    if isinstance(sys.unraisablehook, _WithoutClosedLoopReports):
        return lambda: None
    loggers = [logging.getLogger(name) for name in ("asyncio", "concurrent.futures")]
    for logger in loggers:
        logger.addFilter(_after_failed_save)
    previous = sys.unraisablehook
    sys.unraisablehook = _WithoutClosedLoopReports(previous)

    def remove():
        sys.unraisablehook = previous
        for logger in loggers:
            logger.removeFilter(_after_failed_save)
    return remove


class _WithoutClosedLoopReports:
    """sys.unraisablehook that drops "Event loop is closed" raised by asyncio, passes on the rest."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, unraisable) -> None:
        error, tb = unraisable.exc_value, unraisable.exc_traceback
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        from_asyncio = tb is not None and tb.tb_frame.f_code.co_name == "_check_closed"
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed" and from_asyncio):
            self.previous(unraisable)


def _after_failed_save(record: logging.LogRecord) -> bool:
    """False for the failed save's own leftovers: a failed future nobody awaited (asyncio), or a
    writer thread's callback into orbax's closed event loop (concurrent.futures)."""
    message = record.getMessage()
    return "exception was never retrieved" not in message and "exception calling callback for" not in message


class _Noise:
    """What orbax and its helper threads print while a save runs: replayed after a successful
    save, dropped after a failed one (the run reports the failure itself, once; otherwise each
    thread prints its own traceback), with the failed save's later reports."""

    def __init__(self):
        self.keep = True

    def drop(self) -> None:
        self.keep = False


@contextlib.contextmanager
def _quiet_orbax():
    """Captures stderr (fd 2) and absl's logging while orbax saves; the late-report filters are in
    place from the start (a report may begin while the save is still failing) and stay only if the
    save failed (`noise.drop()`)."""
    remove_filters = _filter_late_reports()
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        noise = _Noise()
        try:
            yield noise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            absl_logger.setLevel(level)
            if noise.keep:
                remove_filters()
                tmp.seek(0)
                sys.stderr.write(tmp.read().decode(errors="replace"))
            else:  # the failed save's coroutines nobody will await, collected at interpreter exit
                warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning)


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete state, to restore into without copying it."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
