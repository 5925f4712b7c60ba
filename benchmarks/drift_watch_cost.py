"""The online drift monitor's cost on a worker's hot path, per event.

Run: ``.venv/bin/python benchmarks/drift_watch_cost.py``. Batches of 512 rows, 5 columns,
the default window (1,000) and stride (500): what `DriftWatch.on_batch` does per batch
(stack the columns, update the monitor, a KS check every 500 rows).
"""

from __future__ import annotations

import time

import numpy as np

from headrace.monitoring.drift import DriftReference, OnlineDriftMonitor

rng = np.random.default_rng(0)
reference = DriftReference.from_columns({f"f{j}": rng.normal(size=1000) for j in range(5)})
monitor = OnlineDriftMonitor(
    reference, window=1000, stride=500, target_run_length=100_000, calibration_checks=2000
)
batch, batches = 512, 200
data = [{f"f{j}": rng.normal(size=batch) for j in range(5)} for _ in range(batches)]
rows = np.arange(batch)
for columns in data[:4]:  # warm: the first check imports scipy's distributions
    monitor.update(np.column_stack([columns[f"f{j}"] for j in range(5)]), rng.random(batch))
monitor.checks = 0
started = time.perf_counter()
for columns in data:
    matrix = np.column_stack([columns[f"f{j}"][rows].astype(np.float64) for j in range(5)])
    monitor.update(matrix, rng.random(batch))
seconds = time.perf_counter() - started
events = batches * batch
print(
    f"{seconds / events * 1e6:.2f} us per event ({events} events in batches of {batch}, "
    f"5 columns, window 1000, stride 500: {monitor.checks} checks)"
)
