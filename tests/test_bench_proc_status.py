"""memory_status reads a process's memory figures from /proc, for this process and another."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pagelens.bench.proc_status import MEMORY_FIELDS, memory_status


def test_memory_status_sees_this_process_grow_by_what_it_touches():
    before = memory_status()
    assert set(before) == set(MEMORY_FIELDS)
    assert before["RssAnon"] + before["RssFile"] <= before["VmRSS"] <= before["VmHWM"]
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, every page written
    after = memory_status()
    assert after["RssAnon"] - before["RssAnon"] >= 60 * 2**20
    assert after["VmHWM"] >= after["VmRSS"] >= before["VmRSS"] + 60 * 2**20
    del block


def test_memory_status_of_another_process_and_of_one_that_is_gone():
    script = "import time; print('up', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"  # an interpreter is running
        assert memory_status(child.pid)["VmRSS"] > 1 * 2**20
    finally:
        child.kill()
        child.wait()
    with pytest.raises(OSError):
        memory_status(child.pid)
