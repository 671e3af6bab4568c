"""``benchmarks/streaming.py`` end to end with one epoch: the streaming latency figures come
from this one command, and it once stopped unseen for a day (it built the command line's
arguments by hand and missed a new one), so it runs here and its table is checked."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERVAL = 30
"""Seconds between the demo's micrographs on the benchmark's virtual clock."""
DEMO_MICROGRAPHS = 3


def test_streaming_benchmark_reports_a_latency_per_demo_micrograph():
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "streaming.py"),
               "--max-epochs", "1", "--interval", str(INTERVAL)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = re.findall(r"^(Falcon_\S+)\s+(\d+\.\d)$", done.stdout, re.MULTILINE)
    assert len(rows) == DEMO_MICROGRAPHS, done.stdout
    assert all(float(latency) > 0 for _, latency in rows)
    assert "%d micrographs, one every %d s" % (DEMO_MICROGRAPHS, INTERVAL) in done.stdout
    done_line = re.search(r"stream done ([\d.]+) s after the first arrival \(([\d.]+) s after "
                          r"the last\); a batch run started at the last arrival is done at "
                          r"([\d.]+) s \(([\d.]+) s of processing\)", done.stdout)
    assert done_line, done.stdout
    stream_end, after_last, batch_end, batch_seconds = map(float, done_line.groups())
    last_arrival = (DEMO_MICROGRAPHS - 1) * INTERVAL  # on the virtual clock
    assert abs(stream_end - after_last - last_arrival) < 0.2
    assert abs(batch_end - batch_seconds - last_arrival) < 0.2
