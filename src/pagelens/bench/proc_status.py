"""A Linux process's memory figures from `/proc/<pid>/status`, importing nothing beyond the
standard library, so a fresh-interpreter probe can read its own before importing anything heavy."""

from __future__ import annotations

from pathlib import Path

MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")  # resident, its peak, anonymous, file-mapped


def memory_status(pid: int | str = "self") -> dict[str, int]:
    """`{field: bytes}` for each of MEMORY_FIELDS the kernel reports for process `pid` ("self": this
    one). OSError when the process is gone."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in MEMORY_FIELDS:
            found[key] = int(value.split()[0]) * 1024  # the kernel writes kB
    return found
