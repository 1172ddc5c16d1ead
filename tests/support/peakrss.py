"""Measuring the peak memory of a command run as a child process."""

from __future__ import annotations

import subprocess
import sys

# Peak RSS a put or get may reach, whatever the file size: well under the 300 MB the design promises.
PEAK_RSS_LIMIT = 200 * 1024 * 1024
# A Python process with chunkstore's libraries loaded is bigger than this, so a peak below
# it means the measurement missed the command.
PLAUSIBLE_MINIMUM_RSS = 10 * 1024 * 1024

# Runs a command as its only child and writes the child's peak RSS (KiB on Linux) to argv[1].
_MEASURE_PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    report.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_measuring_peak_rss(arguments, report_path, **options) -> tuple[subprocess.CompletedProcess, int]:
    """Run arguments and return the result and the peak RSS in bytes of that process alone."""
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE_PEAK_RSS, str(report_path), *arguments], timeout=3600, check=False, **options
    )
    peak = int(report_path.read_text()) * 1024
    assert peak > PLAUSIBLE_MINIMUM_RSS, f"implausible peak RSS {peak}: the measurement missed the command"
    return completed, peak
