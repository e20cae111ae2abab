"""Where the test suite's time goes to building programs: a pytest plugin that sums JAX's compile
events (tracing, lowering, XLA's compile) per test, and a summary of what it wrote.

    rm -rf .pytest_cache/jax                  # cold, as CI starts
    COMPILE_PROFILE=/tmp/cp python -m pytest -q -n auto -p tools.compile_profile
    python -m tools.compile_profile /tmp/cp   # totals, then the tests that build the most

Each test process (each xdist worker) writes one JSON file into the folder $COMPILE_PROFILE;
programs built in the tests' subprocesses (the real command lines) are not counted.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from pathlib import Path

from aaejax.run.files import write_atomic

EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/core/compile/backend_compile_duration": "compile"}
_seconds: collections.Counter = collections.Counter()  # (test id, phase) -> seconds
_current = ["<collection>"]


def _listener(event: str, duration: float, **_) -> None:
    if event in EVENTS:
        _seconds[_current[0], EVENTS[event]] += duration
        if EVENTS[event] == "compile":
            _seconds[_current[0], "programs"] += 1


def pytest_configure(config) -> None:
    import jax.monitoring

    jax.monitoring.register_event_duration_secs_listener(_listener)


def pytest_runtest_setup(item) -> None:
    _current[0] = item.nodeid


def pytest_sessionfinish(session) -> None:
    rows = [[test, phase, value] for (test, phase), value in _seconds.items()]
    write_atomic(Path(os.environ.get("COMPILE_PROFILE", ".compile_profile")) / f"{os.getpid()}.json", json.dumps(rows))


def summary(folder: Path, top: int = 25) -> str:
    per_test: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for f in folder.glob("*.json"):
        for test, phase, value in json.loads(f.read_text()):
            per_test[test][phase] += value
    totals = sum(per_test.values(), collections.Counter())
    lines = [f"{int(totals['programs'])} programs built; trace {totals['trace']:.0f} s, lower {totals['lower']:.0f} s, "
             f"compile {totals['compile']:.0f} s"]
    built = {test: c["trace"] + c["lower"] + c["compile"] for test, c in per_test.items()}
    for test in sorted(built, key=built.get, reverse=True)[:top]:
        lines.append(f"{built[test]:6.1f} s {int(per_test[test]['programs']):5d} programs  {test}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1] if len(sys.argv) > 1 else ".compile_profile")))
