"""iqpfr.runtime: what a computing process pins. The settings are process-wide, so each check runs
in a fresh interpreter, started as a stage is (no thread variables inherited)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys, torch
from iqpfr import cli, runtime  # what a stage's process imports
runtime.configure({arg})
print(json.dumps({{"threads": torch.get_num_threads(),
                   "deterministic": torch.are_deterministic_algorithms_enabled(),
                   "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
                   "inductor_imported": "torch._inductor.config" in sys.modules,
                   "inductor_deterministic": sys.modules["torch._inductor.config"].deterministic
                                             if "torch._inductor.config" in sys.modules else None,
                   "scipy_stats_imported": "scipy.stats" in sys.modules,
                   "described": runtime.describe()}}))
"""


def _probe(arg: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_DYNAMIC",
                                                           "MKL_DYNAMIC")}
    env["IQPFR_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE.format(arg=arg)], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_configure_pins_threads_and_deterministic_kernels():
    r = _probe()
    assert r["threads"] == 1 and r["deterministic"] and r["warn_only"]
    d = r["described"]
    assert d["deterministic_algorithms"] and d["threads"] == 1
    assert (d["OMP_DYNAMIC"], d["MKL_DYNAMIC"], d["OMP_NUM_THREADS"], d["MKL_NUM_THREADS"]) == ("FALSE", "FALSE", "1", "1")
    # a stage's process does not pay for the compiler's start-up, nor for scipy.stats' before it needs it
    assert not r["inductor_imported"] and not r["scipy_stats_imported"]


def test_configure_for_compiling_sets_the_compilers_flag_too():
    r = _probe("compiling=True")
    assert r["deterministic"] and r["warn_only"] and r["inductor_deterministic"] is True
