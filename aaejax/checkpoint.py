"""Orbax checkpoints of the whole TrainState, plus a JSON record of the model and its config.

Saves go through orbax's commit protocol (a step directory appears only when complete) and are
waited for before the process ends. Restores try the newest step first and fall back to older
ones when it is unreadable; a work dir whose checkpoints are all unreadable is an error, never a
silent fresh start. A resumed run moves the unreadable newer steps aside (`set_aside`) rather than
deleting them, so it can save those step numbers again and nothing on disk is lost.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from aaejax import parallel

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, directory: str | Path, max_to_keep: int = 3, keep_steps=()):
        """Keeps the newest `max_to_keep` steps, and every step in `keep_steps` for good."""
        self.directory = Path(directory).absolute()
        if keep_steps:
            policies = ocp.checkpoint_managers
            options = ocp.CheckpointManagerOptions(create=True, preservation_policy=policies.AnyPreservationPolicy(
                [policies.LatestN(max_to_keep), policies.CustomSteps([int(s) for s in keep_steps])]))
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, meta: dict) -> None:
        """Saves asynchronously; `wait()` (or `close()`) blocks until it is committed."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(meta)), force=True)

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
                errors.append(f"step {step}: {type(e).__name__}: {e}")
                log.warning("checkpoint step %d is unreadable (%s); trying an older one", step, e)
                continue
            if check_meta is not None:
                check_meta(meta)  # a mismatch is the user's to resolve, not to fall back from
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target)))
                return restored["state"], step
            except Exception as e:  # noqa: BLE001
                errors.append(f"step {step}: {type(e).__name__}: {e}")
                log.warning("checkpoint step %d is unreadable (%s); trying an older one", step, e)
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


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete state, to restore into without copying it."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
