"""Run a step graph: up to `jobs` steps at once, each as soon as its dependencies are done; resumable.

A finished step leaves WORK/state/<name>.json: what it was made from (its command, or its function's name and
settings) and a digest of each dependency's own marker, i.e. of the exact upstream results it used. A later run
skips a step only when both still match: a changed command or profile setting re-runs the step, and a re-run
upstream step re-runs every step below it, instead of silently reusing stale results. Commands write to
WORK/logs/<name>.log. A failing step stops its dependants; independent steps go on; the run then reports every
failure with the last lines of its log.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from inference.atomic import read_json, write_json, write_text


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


@dataclass
class Step:
    name: str
    deps: tuple[str, ...] = ()
    argv: list[str] | None = None          # a command (run in its own process)
    func: Callable[[], object] | None = None  # or a function (run in the runner's process)
    gpu: bool = False                      # uses the GPU (for the runner's bookkeeping only)
    info: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)   # what the step is made with (its "done" fingerprint)
    verify: Callable[[object], bool] | None = None  # given the recorded info: are the step's outputs still there?


def _signature(step: Step) -> list[str] | str | dict:
    if step.argv is not None:   # a command, and what it is made with where its arguments do not say it all
        return {"command": step.argv, "settings": step.settings} if step.settings else step.argv
    return {"function": step.name, "settings": step.settings} if step.settings else f"function:{step.name}"


def _marker(work: Path, name: str) -> Path:
    return work / "state" / f"{name}.json"


def _digest(work: Path, name: str) -> str | None:
    """The fingerprint of a finished step's marker (None: not finished)."""
    try:
        return hashlib.sha256(_marker(work, name).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def is_done(work: Path, step: Step) -> bool:
    """Finished, from the same command / settings, on the upstream results that are there now."""
    rec = read_json(_marker(work, step.name))
    if not isinstance(rec, dict):
        return False
    return (json.loads(json.dumps(_signature(step), default=str)) == rec.get("signature")
            and rec.get("upstream", {}) == {d: _digest(work, d) for d in step.deps}
            and (step.verify is None or bool(step.verify(rec.get("info")))))


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
    root = str(Path(__file__).resolve().parents[1])   # the repository: `python -m training...` must find it
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
        write_text(log, json.dumps(info, indent=2, default=str) + "\n")
    seconds = time.monotonic() - t0
    marker = _marker(work, step.name)
    write_json(marker, {"signature": _signature(step), "upstream": {d: _digest(work, d) for d in step.deps},
                        "seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "info": info}, indent=None, mkdir=True, default=str)
    return seconds, info


def run_steps(work: Path, steps: list[Step], jobs: int = 1, progress: bool = True, desc: str = "benchmark steps"
              ) -> RunResult:
    work = Path(work)
    result = RunResult()
    state = _initial_state(work, steps)   # name -> pending | running | done | failed | blocked
    result.skipped.extend(s.name for s in steps if state[s.name] == "done")
    bar = tqdm(total=len(steps), initial=len(result.skipped), desc=desc, unit="step", disable=not progress)
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while True:
            for name in _block_dependants(steps, state):
                result.blocked.append(name)
                bar.update(1)
            ready = [s for s in steps if state[s.name] == "pending" and all(state[d] == "done" for d in s.deps)]
            for s in ready[: max(0, max(1, jobs) - len(running))]:
                state[s.name] = "running"
                running[pool.submit(_execute, work, s)] = s.name
                tqdm.write(f"start  {s.name}") if progress else None
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                msg = _record(fut, running.pop(fut), state, result)
                bar.update(1)
                tqdm.write(msg) if progress else print(msg, flush=True)
    bar.close()
    return result


def _initial_state(work: Path, steps: list[Step]) -> dict[str, str]:
    """done (finished as asked, on upstream steps that are done too: a re-run goes downstream) or pending, for every
    step; unknown dependencies and cycles are refused."""
    by_name = {s.name: s for s in steps}
    for s in steps:
        missing = [d for d in s.deps if d not in by_name]
        if missing:
            raise ValueError(f"step {s.name} depends on unknown steps {missing}")
    state: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for s in steps:
            if s.name not in state and all(d in state for d in s.deps):
                done = is_done(work, s) and all(state[d] == "done" for d in s.deps)
                state[s.name] = "done" if done else "pending"
                changed = True
    for s in steps:
        if s.name not in state:
            raise ValueError(f"step {s.name}: its dependencies form a cycle")
    return state


def _block_dependants(steps: list[Step], state: dict[str, str]) -> list[str]:
    """Mark blocked every pending step below a failed or blocked one; returns the steps newly blocked."""
    blocked: list[str] = []
    changed = True
    while changed:
        changed = False
        for s in steps:
            if state[s.name] == "pending" and any(state[d] in ("failed", "blocked") for d in s.deps):
                state[s.name] = "blocked"
                blocked.append(s.name)
                changed = True
    return blocked


def _record(fut: Future, name: str, state: dict[str, str], result: RunResult) -> str:
    """A finished step's outcome into `state` and `result`; returns the line that reports it."""
    try:
        seconds, _ = fut.result()
    except Exception as exc:  # noqa: BLE001 - every failure is reported, the others go on
        state[name] = "failed"
        result.failed[name] = str(exc)
        return f"FAILED {name}: {str(exc).splitlines()[0]}"
    state[name] = "done"
    result.done.append(name)
    result.seconds[name] = round(seconds, 1)
    return f"done   {name} ({seconds:.1f} s)"
