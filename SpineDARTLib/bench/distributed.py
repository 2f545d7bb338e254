"""Benchmark units (one task × one method) and running them serially or on ``dask.distributed``.

A unit is a top-level function of plain arguments (the task, the method, the seed, the detector
weights' path), so a worker process can run it: the detector is loaded once per process. On a
cluster each worker runs one unit at a time on one torch thread (the fits are what is parallel).
The default cluster is local, bound to 127.0.0.1 (its HTTP endpoints too), without a dashboard; ``scheduler`` joins an
existing one. Records come back as units finish and the caller writes each at once, so a stopped
run keeps them; a unit whose worker died (dask retries it on another first) or that raised comes
back as a failed record marked ``error`` — reported, and run again by the next resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UserError
from .sets import Task

Unit = tuple[Task, str]  # (task, method)
CONNECT_TIMEOUT_S = 10


@lru_cache(maxsize=2)
def _annotator(weights: tuple[str, str | None]):
    from ..nets.annotator import load_annotator

    detector, refiner = weights
    return load_annotator(Path(detector), None if refiner is None else Path(refiner))


def run_unit(task: Task, method: str, seed: int, render_mode: str, init: str, weights: tuple | None,
             miscalibration: list[float] | None = None, similarity: str | None = None,
             threads: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One task's record by one method (``fit``, ``ncc`` or ``geoplan``). ``weights``: the detector's and
    the refiner's files (refiner None: the first stage alone), or None without a detector. ``miscalibration``:
    [angle deg, distance mm, offset mm] of the geometry errors handed to the method; ``similarity``:
    the learned similarity's weights (None: the shipped ones)."""
    import torch

    from ..fit.optimise import FitConfig
    from ..fit.terms import DEFAULT_LOSS, bench_method_loss
    from ..geometry.perturb import Miscalibration
    from .accuracy import run_task
    from .geoplan import run_geoplan_task

    if threads is not None:
        torch.set_num_threads(threads)
    detector = _annotator(tuple(weights)) if weights else None
    wrong = Miscalibration(*miscalibration) if miscalibration else None
    if method == "geoplan":
        return run_geoplan_task(task, detector, seed, wrong)
    kind, loss = bench_method_loss(method)
    cfg = FitConfig(method=kind, seed=seed, render_mode=render_mode, loss=loss or DEFAULT_LOSS, similarity=similarity)
    return run_task(task, method, seed, cfg, detector=detector if init == "auto" else None, miscalibration=wrong)


def run_units(
    units: list[Unit], args: tuple, workers: int = 1, scheduler: str | None = None, fn: Callable = run_unit
) -> Iterator[tuple[Unit, dict[str, Any]]]:
    """(unit, record) as each unit finishes: in order in this process when ``workers`` is 1 and no
    scheduler is given, else on dask workers (finishing order). ``args``: run_unit's after the method
    (``fn``: what runs a unit, :func:`run_unit` but in tests)."""
    if workers <= 1 and scheduler is None:
        for unit in units:
            try:
                record = fn(*unit, *args)
            except Exception as exc:  # noqa: BLE001 - as on a cluster: a failed record, the run goes on
                record = _error_record(unit, exc)
            yield unit, record
        return
    yield from _on_dask(units, args, workers, scheduler, fn)


def _error_record(unit: Unit, exc: BaseException) -> dict[str, Any]:
    from .accuracy import failed_record

    why = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]
    return failed_record(*unit, f"error: {why}", error=True)


def _on_dask(units: list[Unit], args: tuple, workers: int, scheduler: str | None, fn: Callable):
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)  # fmt: skip
    try:
        client = Client(cluster if cluster is not None else scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise UserError(f"cannot reach the dask scheduler {scheduler!r} ({exc.__class__.__name__})",
                        "start it (dask scheduler) or drop --scheduler") from exc  # fmt: skip
    try:
        # Only as many units in flight as the cluster has threads: a worker then holds just the unit it
        # runs, so a unit that kills its worker takes no queued unit with it (every death counts
        # against each unit the worker held; a bystander hit twice was failed as the culprit).
        todo = iter(units)
        futures: dict = {}
        done = as_completed()

        def submit_next() -> None:
            unit = next(todo, None)
            if unit is not None:
                fut = client.submit(fn, *unit, *args, 1, pure=False)
                futures[fut] = unit
                done.add(fut)

        for _ in range(max(1, sum(client.nthreads().values()))):
            submit_next()
        for fut in done:
            unit = futures.pop(fut)
            submit_next()
            try:
                record = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed unit (or a worker that died) is a failed record
                record = _error_record(unit, exc)
            yield unit, record
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
