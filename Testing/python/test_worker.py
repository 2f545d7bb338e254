"""The background worker through its client, as the Slicer module drives it: a plan of the demo
case, cancel mid-run, a worker that dies, a refused job."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

from SpineDARTLib.resources import demo_case_dir
from SpineDARTLib.schemas import PLAN_REPORT_V1, load_json
from SpineDARTLib.worker import PROTOCOL, WorkerClient

CASE = demo_case_dir()
CUDA = torch.cuda.is_available()


def _job(out, **extra):
    return {
        "xrays": [str(CASE / "xray_a.png"), str(CASE / "xray_b.png")],
        "landmarks": str(CASE / "landmarks.json"),
        "masks": str(CASE / "masks.npz"),
        "levels": ["L2"],
        "out": str(out),
        **extra,
    }


def _wait_for(client, predicate, timeout_s=120.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        client.poll()
        if any(predicate(m) for m in client.messages) or client.finished:
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out; messages: {client.messages}")


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_worker_plan_demo(tmp_path):
    client = WorkerClient(_job(tmp_path / "out"), workdir=tmp_path / "job").start()
    assert client.wait(timeout_s=300) == "done", (client.reason, client.messages[-3:])
    kinds = [m["type"] for m in client.messages]
    assert client.messages[0] == {"type": "hello", "protocol": PROTOCOL, "pid": client.pid}
    assert kinds[-1] == "result" and "vertebra" in kinds
    fractions = [m["fraction"] for m in client.messages if m["type"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    (v,) = [m for m in client.messages if m["type"] == "vertebra"]
    assert v["level"] == "L2" and v["status"] == "go" and len(v["cannulas"]) == 2
    report = load_json(client.result["report"], PLAN_REPORT_V1)
    assert report["summary"] == {"L2": "go"} and json.loads((tmp_path / "job" / "job.json").read_text())["levels"]


def test_cancel_mid_run(tmp_path):
    client = WorkerClient(_job(tmp_path / "out"), workdir=tmp_path / "job").start()
    _wait_for(client, lambda m: m["type"] == "progress" and "fitting" in m["message"])
    client.cancel()
    assert client.wait(timeout_s=30) == "cancelled" and client.reason == "cancelled by the user"
    assert _gone(client.pid)
    assert not (tmp_path / "out" / "report.json").exists()  # nothing half-written passes as a plan


def test_worker_crash(tmp_path):
    """The child dies (as on out-of-memory): the client says so instead of hanging."""
    client = WorkerClient(_job(tmp_path / "out"), workdir=tmp_path / "job").start()
    _wait_for(client, lambda m: m["type"] == "hello")
    os.kill(client.pid, signal.SIGKILL)
    assert client.wait(timeout_s=30) == "crashed"
    assert "ended unexpectedly (signal 9)" in client.reason


@pytest.mark.parametrize(
    "job, match",
    [
        ({"xrays": [str(CASE / "xray_a.png")]}, "1 X-ray(s) given"),
        ({"levels": ["T4"]}, "T4 not marked in both views"),
        ({"landmarks": None, "detector": "/nonexistent/detector.safetensors"}, "detector weights not found"),
        ({"device": "tpu"}, "device 'tpu' is unknown"),
        pytest.param({"device": "gpu"}, "no CUDA GPU", marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    ],
)
def test_worker_refuses_a_bad_job(tmp_path, job, match):
    client = WorkerClient({**_job(tmp_path / "out"), **job}, workdir=tmp_path / "job").start()
    assert client.wait(timeout_s=120) == "failed"
    assert match in client.reason
    err = next(m for m in client.messages if m["type"] == "error")
    assert err["kind"] == "input"
