"""What the benchmarks read of the machine they run on (imported by the benchmark scripts)."""

from __future__ import annotations

import os


def busy() -> float:
    """The whole machine's busy CPU seconds so far (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
