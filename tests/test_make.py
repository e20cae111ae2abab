"""The Makefile: which JAX build `make install` chooses (a stand-in nvidia-smi; `make -n` only
prints the commands, so nothing is installed), and its refusals."""

import os
import subprocess

from conftest import REPO


def _make(*args, path_prefix=None):
    env = dict(os.environ)
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(["make", *args, "VENV=/nonexistent/venv"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def _stand_in_nvidia_smi(folder, works: bool):
    folder.mkdir(exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + ('echo "GPU 0: NVIDIA H200"\n' if works else "exit 9\n"))
    tool.chmod(0o755)
    return folder


def test_make_install_chooses_cuda12_with_a_gpu_and_cpu_without(tmp_path):
    with_gpu = _make("-n", "install", path_prefix=_stand_in_nvidia_smi(tmp_path / "gpu", True)).stdout
    without = _make("-n", "install", path_prefix=_stand_in_nvidia_smi(tmp_path / "none", False)).stdout
    assert "--compile-bytecode -e '.[cuda12]'" in with_gpu
    assert "--compile-bytecode -e '.'" in without and "[cuda12]" not in without
    forced = _make("-n", "install", "ACCEL=cpu", path_prefix=_stand_in_nvidia_smi(tmp_path / "gpu", True)).stdout
    assert "--compile-bytecode -e '.'" in forced and "[cuda12]" not in forced


def test_make_refuses_an_unknown_accelerator_and_model():
    proc = _make("install", "ACCEL=tpu")
    assert proc.returncode != 0 and "unknown ACCEL='tpu'" in proc.stderr
    proc = _make("-s", "train", "MODEL=vae")
    assert proc.returncode != 0 and "unknown MODEL='vae'" in proc.stderr


def test_make_test_in_a_venv_from_before_uv_installs_uv_first(tmp_path):
    """A venv that `make install` set up with pip has the package's stamp but no uv: `make test`
    installs uv into it before using it, and does not install the package again."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed-cpu").touch()  # newer than pyproject.toml: the package is installed
    proc = subprocess.run(["make", "-n", "test", f"VENV={venv}", "ACCEL=cpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    provide = next(i for i, line in enumerate(lines) if f"test -x {venv}/bin/uv ||" in line)
    use = next(i for i, line in enumerate(lines) if f"{venv}/bin/uv pip install" in line)
    assert provide < use and "pip install -q uv" in lines[provide]
    assert not any("-m venv" in line or "--compile-bytecode" in line for line in lines)  # no reinstall
