"""Benchmark units on a local dask cluster: a worker process that dies mid-unit costs that unit only."""

from __future__ import annotations

from pathlib import Path

import pytest

from SpineDARTLib.bench.distributed import run_units
from SpineDARTLib.bench.sets import Task


def test_a_killed_worker_is_a_failed_record_and_the_rest_are_kept():
    pytest.importorskip("distributed")
    import dask

    def unit(task, method, *args):
        import os
        import time

        if task.target == "L3":
            os._exit(1)  # the worker process dies as an out-of-memory kill would end it
        time.sleep(0.5)  # the others last, so that one queued behind L3 would be there when it dies
        return {"task": task.key, "method": method, "converged": True, "reason": "ok", "args": list(args)}

    tasks = [Task(Path("/nonexistent"), "c", lv, ("a", "b")) for lv in ("L3", "L1", "L2", "L4")]
    # No retries: a unit fails at the first death of a worker holding it, so a bystander queued on the
    # dying worker would fail too; only the unit that killed it may.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        got = dict((u[0].target, r) for u, r in run_units([(t, "fit") for t in tasks], (7,), workers=2, fn=unit))
    assert sorted(got) == ["L1", "L2", "L3", "L4"]
    assert got["L3"]["error"] is True and got["L3"]["reason"].startswith("error: ") and not got["L3"]["converged"]
    assert got["L3"]["plan"]["status"] == "failed" and "KilledWorker" in got["L3"]["reason"], got["L3"]
    assert all(got[lv]["converged"] and got[lv]["args"] == [7, 1] for lv in ("L1", "L2", "L4"))
