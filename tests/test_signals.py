"""Signals from the first instant to the last (issue #36): a Ctrl-C at any moment of a real run
ends it with one line (exit 130 before training, a checkpoint once training), never a traceback,
never lost; a second one ends it at once."""

import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY_FLAGS, cli_code, cli_env


def _start(tmp_path, steps=100000):
    args = [f"--workdir={tmp_path / 'run'}", f"--steps={steps}", "--config.log_every=5", "--config.sample_every=100000",
            "--config.checkpoint_every=100000"] + TINY_FLAGS["aae"]
    return subprocess.Popen([sys.executable, "-c", cli_code("experiments.aae", args)], cwd=REPO,
                            env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_ctrl_c_at_any_moment_is_one_line_and_never_lost(tmp_path):
    rng = random.Random(36)
    for i, delay in enumerate(sorted(rng.uniform(0.05, 4.5) for _ in range(3))):
        proc = _start(tmp_path / str(i))
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, (delay, err[-2000:])
        assert proc.returncode in (130, 1), (delay, proc.returncode, err[-2000:])  # never 0: never lost
        if proc.returncode == 130:  # before training started
            assert err.strip().splitlines()[-1].startswith("interrupted by signal 2: exiting"), err[-500:]
        else:
            assert "stopped by signal 2" in err and "checkpoint saved" in err, err[-2000:]


def test_a_second_signal_while_a_save_holds_stderr_still_says_its_line():
    """A checkpoint save sends fd 2 to a temporary file (orbax's noise); the line of a second
    Ctrl-C in that window goes to the stderr the loop started with."""
    code = ("import os, signal, tempfile, time\n"
            "from aaejax.run.console import StopOnSignal\n"
            "with StopOnSignal():\n"
            "    capture = tempfile.TemporaryFile()\n"
            "    os.dup2(capture.fileno(), 2)  # as checkpoint._quiet_orbax does\n"
            "    for _ in range(2):\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        time.sleep(0.2)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130
    assert proc.stderr.strip() == "signal 2 again: exiting now without saving; the same command resumes from the " \
                                  "last checkpoint"


@pytest.mark.parametrize("guard", ["exit_on_signal()", "StopOnSignal().__enter__(); os.kill(os.getpid(), signal.SIGINT)"],
                         ids=["before_training", "second_signal_in_training"])
def test_a_signal_that_exits_at_once_mid_write_leaves_no_temporary_file(tmp_path, guard):
    """os._exit runs no `finally`: the exit removes the temporary file of a whole-file write that
    the signal cut short (here after the temporary is written, before its rename), and the old
    file stays as it was."""
    code = ("import os, signal, pathlib\n"
            "from aaejax.run import files\n"
            "from aaejax.run.console import StopOnSignal, exit_on_signal\n"
            f"{guard}\n"
            "write = pathlib.Path.write_text\n"
            "def write_then_signal(self, text):\n"
            "    write(self, text)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "pathlib.Path.write_text = write_then_signal\n"
            f"files.write_atomic(pathlib.Path({str(tmp_path / 'eval.json')!r}), 'new')\n"
            "print('not reached')\n")
    (tmp_path / "eval.json").write_text("old")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and "not reached" not in proc.stdout, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]
    assert (tmp_path / "eval.json").read_text() == "old"


def test_a_second_ctrl_c_ends_the_run_at_once(tmp_path):
    proc = _start(tmp_path)
    metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.time() + 120
    # A logged line, not the file: the file opens before the loop puts its own handler in place.
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # signals do not queue: two sent at once arrive as one
    proc.send_signal(signal.SIGINT)
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=60)
    assert time.perf_counter() - t0 < 1.0
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("signal 2 again: exiting now without saving"), err[-2000:]
