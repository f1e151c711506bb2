"""The samplers of the organizers' resource measurement (see eval/resources.py for the protocol): whole-device GPU
memory through NVML every 0.1 s, and machine-wide RAM and CPU the way the organizers log them, with the summaries
of their formulas (rounding and quirks reproduced)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

SAMPLE_INTERVAL_S = 0.1
MIB = 1024 * 1024


def gpu_memory_summary(samples_mib: Sequence[float], interval_s: float = SAMPLE_INTERVAL_S) -> tuple[int, int]:
    """(max GPU MiB, AUC MiB*s) as the organizers compute them: round(max), round(sum * interval).

    Edge case: no samples raises ValueError (the organizers' ``max`` would too).
    """
    if len(samples_mib) == 0:
        raise ValueError("no GPU memory samples")
    values = np.asarray(samples_mib, dtype=np.float64)
    return int(np.round(values.max())), int(np.round(values.sum() * interval_s))


def organizers_cpu_used_percent(before: Sequence[float], now: Sequence[float]) -> float:
    """``100 - idle%`` from two (user, system, idle) cpu-time triples, with the organizers' ``+ 0.1``."""
    delta = [n - b for n, b in zip(now, before, strict=True)]
    total = sum(delta)
    return 100.0 - 100.0 * delta[2] / (total + 0.1)


class GpuMemorySampler:
    """Whole-device used GPU memory (total - free, MiB) through an NVML module.

    ``nvml`` is any object exposing ``nvmlInit``, ``nvmlDeviceGetHandleByIndex``,
    ``nvmlDeviceGetMemoryInfo`` (returning ``.total`` and ``.free`` in bytes) and
    ``nvmlShutdown``; by default the ``pynvml`` module of nvidia-ml-py. If ``nvmlInit``
    or the handle lookup raises, ``available`` is False and ``unavailable_reason`` says why.
    """

    def __init__(self, gpu_index: int = 0, nvml: Any = None):
        self.gpu_index = gpu_index
        self.available = False
        self.unavailable_reason = ""
        self._handle = None
        self._nvml = nvml
        if self._nvml is None:
            try:
                import pynvml  # nvidia-ml-py

                self._nvml = pynvml
            except ImportError as error:
                self.unavailable_reason = f"pynvml (nvidia-ml-py) not importable: {error}"
                return
        try:
            self._nvml.nvmlInit()
        except Exception as error:  # NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
            self.unavailable_reason = f"nvmlInit failed: {type(error).__name__}: {error}"
            return
        try:
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(gpu_index)
        except Exception as error:
            self.unavailable_reason = f"no GPU with NVML index {gpu_index}: {type(error).__name__}: {error}"
            self._shutdown_quietly()
            return
        self.available = True

    def used_mib(self) -> float:
        """One query: (total - free) / 2**20."""
        info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        return (int(info.total) - int(info.free)) / MIB

    def _shutdown_quietly(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        if self.available:
            self._shutdown_quietly()
            self.available = False


def _process_tree_rss_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


@dataclass
class MachineSamples:
    """Raw samples of one run; times are seconds since the sampler started."""

    gpu_times_s: list[float] = field(default_factory=list)
    gpu_used_mib: list[float] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    ram_used_mb: list[float] = field(default_factory=list)
    cpu_used_percent: list[float] = field(default_factory=list)
    tree_rss_mb: list[float] = field(default_factory=list)


class MachineSampler:
    """Background thread: every ``interval_s`` (plus query time) sample GPU, RAM, CPU and process-tree RSS."""

    def __init__(self, gpu: GpuMemorySampler, interval_s: float = SAMPLE_INTERVAL_S):
        self.gpu = gpu
        self.interval_s = interval_s
        self.samples = MachineSamples()
        self.root_pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._t0 = 0.0
        self.error: str = ""

    @property
    def started_at(self) -> float:
        """``time.perf_counter()`` value at which the samples' time axis starts."""
        return self._t0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread.start()

    def stop(self) -> MachineSamples:
        self._stop.set()
        self._thread.join()
        return self.samples

    def _loop(self) -> None:
        import psutil

        def cpu_triple() -> list[float]:
            t = psutil.cpu_times()
            return [t.user, t.system, t.idle]

        before = cpu_triple()
        while not self._stop.is_set():
            try:
                now_s = time.perf_counter() - self._t0
                if self.gpu.available:
                    self.samples.gpu_used_mib.append(self.gpu.used_mib())
                    self.samples.gpu_times_s.append(now_s)
                now = cpu_triple()
                self.samples.cpu_used_percent.append(organizers_cpu_used_percent(before, now))
                before = now
                self.samples.ram_used_mb.append(psutil.virtual_memory().used / MIB)
                self.samples.tree_rss_mb.append(_process_tree_rss_bytes(self.root_pid) / MIB)
                self.samples.times_s.append(now_s)
            except Exception as error:  # keep sampling; report the first problem
                self.error = self.error or f"{type(error).__name__}: {error}"
            self._stop.wait(self.interval_s)
