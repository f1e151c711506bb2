"""Run a step graph: up to `jobs` steps at once, each as soon as its dependencies are done; resumable.

A finished step leaves WORK/state/<name>.json (what ran, seconds); a later run skips it when the marker names the
same command. Commands write to WORK/logs/<name>.log. A failing step stops its dependants; independent steps go
on; the run then reports every failure with the last lines of its log.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from inference.atomic import write_json

from .steps import Step


@dataclass
class RunResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)      # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # step -> reason
    blocked: list[str] = field(default_factory=list)      # not run: a dependency failed
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def _signature(step: Step) -> list[str] | str:
    return step.argv if step.argv is not None else f"function:{step.name}"


def _marker(work: Path, name: str) -> Path:
    return work / "state" / f"{name}.json"


def is_done(work: Path, step: Step) -> bool:
    m = _marker(work, step.name)
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("signature") == _signature(step)
    except (OSError, json.JSONDecodeError):
        return False


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_logged(argv: list[str], log: Path) -> None:
    """Run a command from the repository root (which it can import), stdout+stderr to `log`; a non-zero exit
    raises RuntimeError with the exit code and the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[2])   # the repository: `python -m training...` must find it
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        code = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root).returncode
    if code != 0:
        raise RuntimeError(f"exit code {code}; log {log}:\n{_tail(log)}")


def _execute(work: Path, step: Step) -> tuple[float, object]:
    log = work / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    info: object = None
    if step.argv is not None:
        run_logged(step.argv, log)
    else:
        assert step.func is not None
        info = step.func()
        log.write_text(json.dumps(info, indent=2, default=str) + "\n")
    seconds = time.monotonic() - t0
    marker = _marker(work, step.name)
    write_json(marker, {"signature": _signature(step), "seconds": round(seconds, 2),
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "info": info}, indent=None, mkdir=True,
               default=str)
    return seconds, info


def run_steps(work: Path, steps: list[Step], jobs: int = 1, progress: bool = True) -> RunResult:
    work = Path(work)
    by_name = {s.name: s for s in steps}
    for s in steps:
        missing = [d for d in s.deps if d not in by_name]
        if missing:
            raise ValueError(f"step {s.name} depends on unknown steps {missing}")
    result = RunResult()
    state: dict[str, str] = {}   # name -> pending | running | done | failed | blocked
    for s in steps:
        if is_done(work, s):
            state[s.name] = "done"
            result.skipped.append(s.name)
        else:
            state[s.name] = "pending"
    bar = tqdm(total=len(steps), initial=len(result.skipped), desc="benchmark steps", unit="step", disable=not progress)
    lock = threading.Lock()
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while True:
            changed = True
            while changed:   # block the dependants of failures
                changed = False
                for s in steps:
                    if state[s.name] == "pending" and any(state[d] in ("failed", "blocked") for d in s.deps):
                        state[s.name] = "blocked"
                        result.blocked.append(s.name)
                        bar.update(1)
                        changed = True
            ready = [s for s in steps if state[s.name] == "pending" and all(state[d] == "done" for d in s.deps)]
            for s in ready:
                if len(running) >= max(1, jobs):
                    break
                state[s.name] = "running"
                running[pool.submit(_execute, work, s)] = s.name
                tqdm.write(f"start  {s.name}") if progress else None
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                with lock:
                    try:
                        seconds, _ = fut.result()
                        state[name] = "done"
                        result.done.append(name)
                        result.seconds[name] = round(seconds, 1)
                        msg = f"done   {name} ({seconds:.1f} s)"
                    except Exception as exc:  # noqa: BLE001 - every failure is reported, the others go on
                        state[name] = "failed"
                        result.failed[name] = str(exc)
                        msg = f"FAILED {name}: {str(exc).splitlines()[0]}"
                    bar.update(1)
                    tqdm.write(msg) if progress else print(msg, flush=True)
    bar.close()
    return result
