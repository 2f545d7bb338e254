"""Atomic writers leave the old file intact when interrupted; provenance records what it claims."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from SpineDARTLib.atomic import atomic_path, atomic_write_json, atomic_write_text
from SpineDARTLib.provenance import provenance, sha256_file


def test_exception_mid_write_keeps_old_file(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"version": 2, "half')
        raise RuntimeError("crash in the middle of writing")
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temp file left


def test_unserialisable_value_never_truncates(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"bad": float("nan")})
    assert json.loads(target.read_text()) == {"ok": True}


def test_killed_writer_process_keeps_old_file(tmp_path):
    """A process killed (SIGKILL) while writing a large file must not damage the previous version."""
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    script = (
        "import sys, time\n"
        "from SpineDARTLib.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    fh = open(tmp, 'wb')\n"
        "    fh.write(b'x' * 1000000); fh.flush()\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == b"old"


def test_atomic_write_creates_folders_and_normal_permissions(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "b" / "c.txt", "hi")
    assert p.read_text() == "hi"
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_provenance_hashes_inputs(tmp_path):
    f = tmp_path / "in.bin"
    data = np.arange(1000, dtype=np.int32).tobytes()
    f.write_bytes(data)
    rec = provenance(inputs=[f], seed=7, models={"ssm-L1-L5": "abc"}, command=["spinedart", "x"])
    assert rec["inputs"] == [{"path": str(f), "sha256": hashlib.sha256(data).hexdigest()}]
    assert rec["seed"] == 7 and rec["models"] == {"ssm-L1-L5": "abc"} and rec["command"] == ["spinedart", "x"]
    assert rec["software"] == "spinedart" and rec["software_version"]
    t = time.strptime(rec["time_utc"][:19], "%Y-%m-%dT%H:%M:%S")
    assert t.tm_year >= 2024
    json.dumps(rec, allow_nan=False)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()
