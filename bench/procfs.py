"""What /proc says about a process tree: CPU seconds and resident memory, for the bench's figures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on: the command name may hold spaces


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` itself (threads included, children not)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (ExaBGP and its API relay for a speaker)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _by_role(pid: int, read: Callable[[int], float]) -> dict[str, float]:
    """`read` of `pid` ("speaker") and summed over its descendants, named by role ("exabgp", "relay",
    "other")."""
    result = {"speaker": read(pid), "exabgp": 0.0, "relay": 0.0, "other": 0.0}
    for child in descendants(pid):
        try:
            value = read(child)
        except OSError:
            continue
        line = command_line(child)
        role = "relay" if "relay.py" in line else "exabgp" if "exabgp" in line else "other"
        result[role] += value
    return result


def tree_rss(pid: int) -> dict[str, int]:
    """RSS of `pid` ("speaker") and of its descendants, by role."""
    return {role: int(value) for role, value in _by_role(pid, rss_bytes).items()}


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by `pid` ("speaker") and by its descendants, by role."""
    return {role: round(value, 2) for role, value in _by_role(pid, cpu_seconds).items()}
