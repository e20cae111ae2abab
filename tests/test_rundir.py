"""A run dir nothing can corrupt: one writer at a time, torn lines, an unreadable config.json,
full disks in every save path (one clear line, nothing saved is lost), the API's input checks."""

import errno
import gc
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import aaejax
from aaejax.run import files, rundir, trainer, writers
from aaejax.configs import ConfigError
from conftest import REPO, TINY_FLAGS, cli_code, cli_env, tiny_aae_config


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _steps(workdir):
    return [r["step"] for r in writers.read_metrics(workdir)]


def test_a_second_run_on_a_locked_dir_is_refused_and_readers_still_work(tmp_path, bars):
    """A real run (a subprocess) holds the dir: a second run is refused at once with a line naming
    the holder; aaejax.load reads the dir meanwhile; the first run goes on undisturbed."""
    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", "--steps=100000", "--config.log_every=5", "--config.checkpoint_every=10", "--config.checkpoint_seconds=0",
            "--config.max_to_keep=100000", "--config.sample_every=100000"] + TINY_FLAGS["aae"]
    holder = subprocess.Popen([sys.executable, "-c", cli_code("experiments.aae", args)], cwd=REPO,
                              env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (workdir / "checkpoints" / "10").is_dir():
            time.sleep(0.2)
        config = rundir.read_config(workdir)
        t0 = time.perf_counter()
        with pytest.raises(ConfigError, match=rf"in use by pid {holder.pid} on .* since "):
            trainer.train(config, workdir, bars)
        assert time.perf_counter() - t0 < 5
        assert aaejax.load(workdir).step >= 10  # a reader needs no lock
        assert holder.poll() is None  # the holder runs on
    finally:
        holder.send_signal(signal.SIGTERM)
        _, err = holder.communicate(timeout=60)
    assert "checkpoint saved" in err
    steps = _steps(workdir)
    assert steps == sorted(set(steps))  # one writer: no duplicated or out-of-order steps


def test_the_lock_dies_with_its_process(tmp_path, bars):
    """A killed holder leaves no stale lock: the next run just starts."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    code = f"from aaejax.run import rundir; import time\nwith rundir.WorkdirLock(__import__('pathlib').Path({str(workdir)!r})):\n    print('locked', flush=True); time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match="in use by"):
        trainer.train(tiny_aae_config(num_steps=10), workdir, bars)
    holder.kill()
    holder.wait()
    trainer.train(tiny_aae_config(num_steps=10), workdir, bars)
    assert aaejax.load(workdir).step == 10


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path, bars, caplog):
    trainer.train(tiny_aae_config(num_steps=20), tmp_path, bars)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "d_lo')  # killed (or a full disk) in the middle of a line
    trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    assert _steps(tmp_path) == [10, 20, 30, 40]
    assert "torn" in caplog.text
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_an_unreadable_config_json_falls_back_to_the_checkpoints(tmp_path, bars, caplog):
    trainer.train(tiny_aae_config(num_steps=20), tmp_path, bars)
    (tmp_path / "config.json").write_text('{"model": "aae", "lat')
    m = aaejax.load(tmp_path)
    assert m.step == 20 and m.config.latent_dim == 4
    assert "using the config stored in checkpoint step 20" in caplog.text
    trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)  # resumes, and rewrites config.json
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 40
    assert aaejax.load(tmp_path).step == 40


def _full_disk_in(monkeypatch, where: str):
    """Makes one save path raise ENOSPC, as a full disk would."""
    import orbax.checkpoint as ocp
    from PIL import Image

    if where == "checkpoint":
        def failing_save(self, *args, **kwargs):  # orbax wraps the OS error in a ValueError
            raise ValueError("RESOURCE_EXHAUSTED: Failed to write 4096 bytes: No space left on device [os_error_code='28']")
        monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    elif where == "metrics":
        real = writers.MetricWriter.__init__

        def init(self, *args, **kwargs):
            real(self, *args, **kwargs)
            if self.enabled:
                self._jsonl.write = _enospc
        monkeypatch.setattr(writers.MetricWriter, "__init__", init)
    elif where == "grid":
        write_bytes = Path.write_bytes
        monkeypatch.setattr(Path, "write_bytes", lambda self, *a, **k: _enospc() if ".png.tmp" in self.name
                            else write_bytes(self, *a, **k))
    elif where == "tensorboard":
        monkeypatch.setattr(writers.EventFile, "scalars", _enospc)
    elif where == "config":
        write_text = Path.write_text
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _enospc() if self.name.startswith(".config.json")
                            else write_text(self, *a, **k))


@pytest.mark.parametrize("where,what,step", [
    ("checkpoint", "a checkpoint", 20), ("metrics", "metrics.jsonl", 10), ("grid", "a sample grid", 20),
    ("tensorboard", "TensorBoard events", 10), ("config", "config.json", 0)])
def test_a_full_disk_in_any_save_path_is_one_line_and_loses_nothing(tmp_path, bars, monkeypatch, caplog, where, what,
                                                                    step):
    """The run ends with WriteError: what, at which step, the path, the free space, the last
    intact checkpoint and what to do; a rerun with space continues from what was saved."""
    if where != "config":
        trainer.train(tiny_aae_config(num_steps=0), tmp_path, bars)  # config.json in place
    with monkeypatch.context() as patch:
        _full_disk_in(patch, where)
        with pytest.raises(files.WriteError) as caught:
            trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"could not write {what} at step {step} to {tmp_path}")
    assert "No space left on device" in line and "MB free" in line and line.endswith("free space and rerun the same command")
    # The grids are written once the next chunk is dispatched, after that boundary's checkpoint.
    saved = step > 20 or (where == "grid" and step == 20)
    assert ("last intact checkpoint is step" in line) if saved else ("no checkpoint was saved yet" in line)
    if where == "checkpoint":  # orbax's leftovers of the failed save, reported later, are not shown
        import logging

        caplog.clear()
        logging.getLogger("concurrent.futures").error("exception calling callback for <Future state=finished>")
        logging.getLogger("asyncio").error("Future exception was never retrieved")
        logging.getLogger("concurrent.futures").error("another failure")
        assert [r.getMessage() for r in caplog.records] == ["another failure"]
        passed_on = []
        monkeypatch.setattr(sys.unraisablehook, "previous", passed_on.append)
        _a_write_ending_after_its_loop_closed()
        _an_unraisable_error()
        assert [type(u.exc_value) for u in passed_on] == [ValueError]
        with warnings.catch_warnings(record=True) as shown:  # the filters as they are now
            _a_coroutine_never_awaited()
        assert not shown
    trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)  # space again: the same command finishes
    assert aaejax.load(tmp_path).step == 40 and _steps(tmp_path) == [10, 20, 30, 40]


def _a_write_ending_after_its_loop_closed():
    """What a tensorstore write still in flight after a failed save does when it ends."""
    import asyncio

    import tensorstore as ts

    promise, write = ts.Promise.new()

    async def await_briefly():
        asyncio.ensure_future(write)
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(await_briefly())
    loop.close()
    promise.set_result(None)  # its callback calls loop.call_soon_threadsafe: "Event loop is closed"


def _a_coroutine_never_awaited():
    async def write():
        pass

    write()  # collected at once: RuntimeWarning "coroutine ... was never awaited"
    gc.collect()


def _an_unraisable_error():
    class Failing:
        def __del__(self):
            raise ValueError("a failure of its own")

    Failing()


def _mount_small_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_real_full_disk_ends_the_cli_with_one_line(tmp_path):
    """On a real 600 KB file system the first checkpoint does not fit: one line on stderr, exit
    status 1; after the file system grows, the same command finishes the run."""
    mount = tmp_path / "small"
    if not _mount_small_tmpfs(mount, "600k"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        args = [f"--workdir={mount / 'run'}", "--steps=40", "--config.log_every=10", "--config.checkpoint_every=20", "--config.checkpoint_seconds=0",
                "--config.sample_every=1000"] + ["--config.hidden=(256,256)", "--config.disc_hidden=(16,16)"]
        command = [sys.executable, "-c", cli_code("experiments.aae", args)]
        proc = subprocess.run(command, cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
        progress = ("step ", "data: ", "devices: ", "training ", "first chunk ", "ETA: ")
        lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith(progress)]
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert lines[0].startswith("error: could not write a checkpoint at step 20")
        assert "No space left on device" in lines[0] and lines[0].endswith("free space and rerun the same command")
        subprocess.run(["mount", "-o", "remount,size=20m", str(mount)], check=True)
        proc = subprocess.run(command, cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert aaejax.load(mount / "run").step == 40
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_disk_too_full_for_the_lock_is_one_error_and_frees_the_lock(tmp_path, bars):
    """The lock's few bytes are a run's first write: on a full disk, the one line the other
    writes give, and the lock is not left held (the same process then trains, once freed)."""
    mount = tmp_path / "small"
    if not _mount_small_tmpfs(mount, "2m"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'fill'}", "bs=4k"], capture_output=True)  # to ENOSPC
        with pytest.raises(files.WriteError, match=r"^could not write the work dir's lock .*/run/.lock: No space "
                                                   r"left on device \(0.0 MB free\); free space and rerun"):
            trainer.train(tiny_aae_config(num_steps=10), mount / "run", bars)
        (mount / "fill").unlink()
        assert int(trainer.train(tiny_aae_config(num_steps=10), mount / "run", bars).step) == 10
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_interrupted_whole_file_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, error):
    target = tmp_path / "config.json"
    target.write_text("old")

    def torn(self, data):  # half the bytes reach the temporary file, then the write stops
        with open(self, "w") as f:
            f.write(data[:len(data) // 2])
        raise error(28, "No space left on device") if error is OSError else error()

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(files.WriteError if error is OSError else KeyboardInterrupt):
        files.write_atomic(target, "new contents")
    assert os.listdir(tmp_path) == ["config.json"] and target.read_bytes() == b"old"


def test_sample_and_decode_check_their_inputs(tmp_path, bars):
    trainer.train(tiny_aae_config(num_steps=10), tmp_path, bars)
    m = aaejax.load(tmp_path)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="whole number of images"):
            m.sample(bad)
    assert m.sample(0).shape == (0, 28, 28, 1) and m.sample(np.int64(2)).shape == (2, 28, 28, 1)
    codes = np.zeros((2, m.latent_dim), np.float32)
    codes[1, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        m.decode(codes)
    with pytest.raises(ValueError, match=r"\[0, 1\] \(or uint8\), got NaN values"):
        m.encode(np.full((1, 28, 28, 1), np.nan, np.float32))
    for empty in (np.zeros((0, 28, 28, 1), np.float32), np.zeros((0, 28, 28, 1), np.uint8)):
        assert m.encode(empty).shape == (0, m.latent_dim)
    assert m.decode(np.zeros((0, m.latent_dim))).shape == (0, 28, 28, 1)


def test_sample_draws_large_counts_in_pieces_and_refuses_what_cannot_fit(tmp_path, bars, monkeypatch):
    from aaejax import api

    trainer.train(tiny_aae_config(num_steps=10), tmp_path, bars)
    m = aaejax.load(tmp_path)
    monkeypatch.setattr(api, "SAMPLE_PIECE", 4)
    x = np.asarray(m.sample(10, seed=3))
    assert x.shape == (10, 28, 28, 1) and 0 <= x.min() and x.max() <= 1
    for i in range(3):  # piece i from fold_in(key, i), the last one cut to size
        piece = api.protocol.sample(m.state, jax.random.fold_in(jax.random.PRNGKey(3), i), 4, model=m.model)
        np.testing.assert_array_equal(x[4 * i:4 * i + 4], np.asarray(piece)[:len(x[4 * i:4 * i + 4])])
    with pytest.raises(ValueError, match=r"one label per image"):
        m.sample(10, labels=np.zeros(9, np.int32))
    monkeypatch.setattr(api, "_free_memory", lambda: 10 * 28 * 28 * 4)  # room for 10 images, not their copy
    with pytest.raises(aaejax.api.TooLarge, match=r"sample\(10\) needs .* GiB .* ask for fewer"):
        m.sample(10)


def _open_files() -> list[str]:
    """What this process's file descriptors point to."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            pass
    return out


def test_a_writer_that_cannot_start_on_a_full_disk_leaves_no_file_open(tmp_path):
    mount = tmp_path / "small"
    if not _mount_small_tmpfs(mount, "64k"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        (mount / "run").mkdir()
        subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'fill'}", "bs=4k"], capture_output=True)  # to ENOSPC
        with pytest.raises(files.WriteError) as caught:
            writers.MetricWriter(mount / "run")
        assert caught.value.what == "TensorBoard events" and caught.value.reason == "No space left on device"
        assert [path for path in _open_files() if path.startswith(str(mount))] == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_under_the_event_file_is_one_error_not_a_hang(tmp_path):
    """TensorBoard events fill a real 64 KB file system (metrics.jsonl kept in memory): the writer
    ends with one WriteError naming them, within seconds. (tensorboardX's own writer thread died
    of it, silently, and the next scalar waited forever on its full queue.)"""
    import io
    import threading

    mount = tmp_path / "small"
    if not _mount_small_tmpfs(mount, "64k"):
        pytest.skip("cannot mount a small tmpfs here")
    outcome = []

    def fill():
        (mount / "run").mkdir()
        w = writers.MetricWriter(mount / "run")
        w._jsonl = io.StringIO()
        try:
            for step in range(1, 10_000):
                w.write(step, {f"metric_{i}": float(i) for i in range(50)})
        except files.WriteError as e:
            outcome.append(e)
        w.close()
        outcome.append("closed")

    try:
        worker = threading.Thread(target=fill, daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "a full disk under the events hangs the run"
        error, closed = outcome
        assert error.what == "TensorBoard events" and error.reason == "No space left on device" and closed == "closed"
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
