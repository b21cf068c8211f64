"""Is the machine quiet enough to judge a ratio? The CPU time that processes outside this benchmark's own
process tree used while it ran, in CPUs (``Others.cpus``): a ratio measured beside another job's 1.5 CPUs on a
2-CPU machine is a figure about the neighbour, not about cxrray, and a benchmark says so instead of judging."""

from __future__ import annotations

import os
import time
from pathlib import Path

BUSY_CPUS = 0.25  # other processes' average CPU use above which a figure is not judged


class Others:
    """Start the clock with ``Others()``; ``cpus()`` is the CPUs the rest of the machine used since."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        """Busy CPU seconds of the whole machine (``/proc/stat``: user, nice, system, irq, softirq)."""
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        """CPU seconds of this process and every descendant (Ray's raylet, its workers), from ``/proc``."""
        parent, ticks = {}, {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rindex(")") + 2:].split()
            parent[int(d.name)] = int(rest[1])
            ticks[int(d.name)] = int(rest[11]) + int(rest[12])  # utime + stime
        mine, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            p = frontier.pop()
            kids = [c for c, pp in parent.items() if pp == p and c not in mine]
            mine.update(kids)
            frontier += kids
        return sum(ticks.get(p, 0) for p in mine) / os.sysconf("SC_CLK_TCK")

    def cpus(self) -> float:
        wall = max(time.monotonic() - self.t0, 1e-9)
        return max((self._busy() - self.busy0) - (self._own() - self.own0), 0.0) / wall

    def verdict(self, ok: bool) -> tuple[bool, str]:
        """(ok, note): a met goal stands; an unmet one on a busy machine is not judged (ok, said so)."""
        others = self.cpus()
        if others <= BUSY_CPUS or ok:
            return ok, f"other processes {others:.2f} CPUs"
        return True, (f"NOT JUDGED: other processes used {others:.2f} CPUs of {os.cpu_count()} while it ran "
                      f"(quiet: <= {BUSY_CPUS}); rerun on a quiet machine")


def status_mib(pid: int, field: str = "VmRSS") -> float:
    """A ``/proc/<pid>/status`` memory field of process ``pid`` in MiB (``VmRSS``: its resident set now; ``VmHWM``:
    its peak so far); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith(f"{field}:")), 0.0)
    except OSError:
        return 0.0
