"""The background worker: a child process that plans one job, and the client that runs it.

Why a process: a plan takes tens of seconds of torch work; inside Slicer it must not freeze the
application, must be cancellable at any moment, and a crash in it (out of memory, a native library)
must not take the scene down. The child and the client speak JSON lines on the child's stdout,
``spinedart.worker/1``:

- first ``{"type": "hello", "protocol": 1, "pid": ...}`` (the client refuses another protocol),
- then ``progress`` (``fraction``, ``message``), ``vertebra`` (one planned level: status and its
  cannulas' flags), and finally ``result`` (the report's path) or ``error`` (``kind``: ``input`` for
  a bad job, ``crash`` for anything else, with the traceback).

The job is a JSON file (``spinedart.worker-job/1``: ``xrays``, ``landmarks`` and ``masks`` or none
for the detector, ``detector`` and ``refiner`` weights (default: the shipped ones), ``geometries``, ``levels``,
``gauge``, ``margin_mm``, ``device``, ``seed``, ``out``) in the job's own folder; the outputs go
where it says (``out``). The client (:class:`WorkerClient`) starts the child in its own process group,
reads it on a thread into a queue that a poller drains (a ``qt.QTimer`` in Slicer, a loop in
tests), and cancels by ending the whole group. Run the child alone with
``python -m SpineDARTLib.worker JOB.json``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROTOCOL = 1
JOB_SCHEMA = "spinedart.worker-job/1"
_LIB_ROOT = Path(__file__).resolve().parents[1]


# --- the child --------------------------------------------------------------------------------------
def _emit(msg_type: str, **fields: Any) -> None:
    print(json.dumps({"type": msg_type, **fields}, allow_nan=False, default=str), flush=True)


def run_job(job_path: str | Path) -> int:
    """The child's entry point: plan the job, report on stdout; the exit code mirrors the CLI's."""
    import traceback

    from .errors import EXIT_USER_ERROR, UserError

    _emit("hello", protocol=PROTOCOL, pid=os.getpid())
    try:
        job = json.loads(Path(job_path).read_text())
        if job.get("schema") != JOB_SCHEMA:
            raise UserError(f"not a worker job ({job.get('schema')!r})", f'write "schema": "{JOB_SCHEMA}"', job_path)
        from .pipeline import PlanRequest, run_plan

        def path(x: str | None) -> Path | None:
            return None if x is None else Path(x)

        req = PlanRequest(
            xrays=[Path(p) for p in job["xrays"]],
            landmarks=path(job.get("landmarks")),
            masks=path(job.get("masks")),
            geometries=[path(g) for g in job["geometries"]] if job.get("geometries") else None,
            levels=job.get("levels"),
            gauge=job.get("gauge"),
            margin_mm=float(job.get("margin_mm", 1.0)),
            seed=int(job.get("seed", 0)),
            device=job.get("device", "auto"),
            detector=path(job.get("detector")),
            refiner=path(job.get("refiner")),
        )
        out = Path(job["out"])
        report = run_plan(req, out, lambda f, m: _emit("progress", fraction=round(float(f), 3), message=m))
        for v in report["vertebrae"]:
            cannulas = [
                {"side": c["side"], "safe": c["safe"], "reasons": c["reasons"], "grade": c["predicted"]["grade"],
                 "clearance_mm": c["predicted"]["clearance_mm"]}
                for c in v["cannulas"]
            ]  # fmt: skip
            _emit("vertebra", level=v["level"], status=v["status"], suggestion=v["suggestion"], cannulas=cannulas)
        _emit("result", report=str(out / "report.json"), ok=report["ok"])
        return 0 if report["ok"] else 1
    except UserError as exc:
        _emit("error", kind="input", message=exc.one_line())
        return EXIT_USER_ERROR
    except KeyError as exc:
        _emit("error", kind="input", message=f"{job_path}: the job lacks {exc}; fix: write a complete job file")
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - the client must hear about every failure, with its cause
        _emit("error", kind="crash", message=f"{exc.__class__.__name__}: {exc}", traceback=traceback.format_exc())
        return 3


def describe_message(message: dict[str, Any]) -> str:
    """One log line for a worker message ("" for those a log does not show)."""
    kind = message.get("type")
    if kind == "progress":
        return str(message["message"])
    if kind == "vertebra":
        flags = ", ".join(f"{c['side']} {'safe' if c['safe'] else 'UNSAFE'}" for c in message["cannulas"])
        return f"{message['level']}: {message['status']}" + (f" ({flags})" if flags else "")
    if kind == "error":
        return f"error: {message['message']}"
    return str(message.get("message", "")) if kind == "log" else ""


# --- the client -------------------------------------------------------------------------------------
class WorkerClient:
    """Start a plan job in a child process and follow it without blocking.

    ``python``: the interpreter of the child (default this one; a user environment with CUDA works
    as long as it can import SpineDARTLib). ``state`` goes ``idle`` → ``running`` → ``done`` |
    ``failed`` (the job was refused or the plan raised) | ``cancelled`` | ``crashed`` (the child died
    or spoke nonsense); ``reason`` says why.
    """

    def __init__(self, job: dict[str, Any], python: str | None = None, workdir: str | Path | None = None) -> None:
        self.job = {"schema": JOB_SCHEMA, **job}
        self.python = python or sys.executable
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="spinedart-job-"))
        self.state = "idle"
        self.reason = ""
        self.result: dict[str, Any] | None = None
        self.messages: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._stderr: list[str] = []
        self._cancelled = False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> WorkerClient:
        if self.state != "idle":
            raise RuntimeError("a worker client runs one job once")
        self.workdir.mkdir(parents=True, exist_ok=True)
        job_path = self.workdir / "job.json"
        job_path.write_text(json.dumps(self.job, indent=1))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_LIB_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        self._proc = subprocess.Popen(
            [self.python, "-m", "SpineDARTLib.worker", str(job_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(self.workdir),
            start_new_session=True,  # its own process group: cancel ends everything it started
        )
        self.state = "running"
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"type": "log", "message": line}
            self._queue.put(msg)
        self._proc.wait()
        self._queue.put(None)  # end of stream

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = (self._stderr + [line.rstrip()])[-40:]

    def poll(self) -> list[dict[str, Any]]:
        """Messages that arrived since the last call (never blocks); updates ``state``."""
        new = []
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                break
            if msg is None:
                self._finish()
                break
            self._handle(msg)
            new.append(msg)
        self.messages += new
        return new

    def _handle(self, msg: dict[str, Any]) -> None:
        if not self.messages and msg.get("type") != "hello":
            self.state, self.reason = "crashed", f"the worker did not start with a hello: {msg}"
        elif msg.get("type") == "hello" and msg.get("protocol") != PROTOCOL:
            self.state = "crashed"
            self.reason = f"the worker speaks protocol {msg.get('protocol')}, this client {PROTOCOL}: update SpineDART"
            self._kill()
        elif msg.get("type") == "result":
            self.result = msg
        elif msg.get("type") == "error" and self.state == "running":
            self.state = "failed"
            self.reason = msg.get("message", "")

    def _finish(self) -> None:
        code = None if self._proc is None else self._proc.returncode
        if self._cancelled:
            self.state, self.reason = "cancelled", "cancelled by the user"
        elif self.state == "running" and self.result is not None:
            self.state = "done"
        elif self.state == "running":
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            tail = " | ".join(self._stderr[-3:])
            self.state = "crashed"
            self.reason = f"the worker ended unexpectedly ({how})" + (f": {tail}" if tail else "")

    def _kill(self, grace_s: float = 3.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def cancel(self) -> None:
        """End the child and everything it started; the state becomes ``cancelled``."""
        if self.state == "running":
            self._cancelled = True
            self._kill()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled", "crashed")

    def wait(self, timeout_s: float = 600.0, interval_s: float = 0.1) -> str:
        """Poll until the job ends (tests and scripts; Slicer polls from a timer instead)."""
        end = time.monotonic() + timeout_s
        while not self.finished:
            if time.monotonic() > end:
                self.cancel()
                self.poll()
                self.reason = f"timed out after {timeout_s:.0f} s"
                break
            self.poll()
            time.sleep(interval_s)
        return self.state


if __name__ == "__main__":
    sys.exit(run_job(sys.argv[1]) if len(sys.argv) == 2 else 2)
