"""How many torch threads the fused merge path uses: as many as the machine has free (private).

Chunk operations take tens of microseconds, and every multi-threaded torch operation waits
for all of its threads: on an idle two-core machine two threads make a merge about 1.5x
faster, but when another job holds a core that wait becomes a scheduler time slice per
operation, and two threads are then 30-100x slower than one (measured on a 0.1B-parameter
merge). So ``threads="auto"`` starts with one thread and, every quarter of a second, counts
the cores that *other* processes kept busy (``/proc/stat`` minus this process's own CPU time)
and uses the free ones. The thread count never changes a result: every operation of the fused
path is elementwise or an exact integer count.
"""

from __future__ import annotations

import os
import time
from typing import Literal

import torch

from weightspace._errors import WeightspaceValueError

__all__ = ["ThreadGovernor", "check_threads"]

Threads = int | Literal["auto"]

#: Seconds between two decisions of ``threads="auto"``.
WINDOW = 0.25


def check_threads(threads: object) -> Threads:
    """Validate the ``threads`` argument of :func:`weightspace.merge.run_merge`."""
    if threads == "auto":
        return "auto"
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise WeightspaceValueError(
            f'`threads` must be "auto" or an int >= 1, got {threads!r}; "auto" uses the cores '
            "that no other process keeps busy"
        )
    return threads


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (``None`` off Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):  # pragma: no cover - not on Linux
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (sum(fields[:8]) - idle) / ticks


class ThreadGovernor:
    """Sets torch's intra-op threads while the fused path runs, and restores them at the end.

    Args:
        threads: A fixed number, or ``"auto"`` (see the module notes).
    """

    def __init__(self, threads: Threads) -> None:
        self.saved = torch.get_num_threads()
        self.auto = threads == "auto"
        self.limit = usable_cpus() if self.auto else int(threads)
        self.current = 1 if self.auto else self.limit
        torch.set_num_threads(self.current)
        self._wall, self._mine, self._busy = time.perf_counter(), time.process_time(), None
        if self.auto:
            self._busy = _busy_seconds()

    def tick(self) -> None:
        """Re-decide (at most every :data:`WINDOW` seconds) how many threads to use."""
        if not self.auto or self.limit == 1:
            return
        wall = time.perf_counter()
        if wall - self._wall < WINDOW:
            return
        mine, busy = time.process_time(), _busy_seconds()
        if busy is not None and self._busy is not None:
            others = max(0.0, (busy - self._busy) - (mine - self._mine)) / (wall - self._wall)
            wanted = max(1, min(self.limit, int(self.limit - others + 0.2)))
            if wanted != self.current:
                torch.set_num_threads(wanted)
                self.current = wanted
        self._wall, self._mine, self._busy = wall, mine, busy

    def close(self) -> None:
        """Give torch back the thread count it had."""
        torch.set_num_threads(self.saved)
