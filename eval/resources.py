"""The organizers' resource measurement (``python -m eval resources``).

Protocol (``resource_eval.py`` / ``Efficiency.py`` / ``load_json.py`` of the organizers, see
``shared/docs/flare_protocol.md``):

- ONE RUN PER CASE: a fresh temporary ``inputs/`` folder holding exactly one input file and
  an empty ``outputs/`` folder; then either the organizers' container command
  (``docker container run --shm-size=28gb -m 28G --gpus="device=N" --name NAME --rm
  -v INPUTS/:/workspace/inputs/ -v OUTPUTS/:/workspace/outputs/ IMAGE /bin/bash -c "sh predict.sh"``)
  or a command template run by ``/bin/sh`` in a fresh process, e.g.
  ``"sh predict.sh {inputs} {outputs}"`` (placeholders: ``{inputs}``, ``{outputs}``, ``{case}``,
  ``{gpu}``; paths are shell-quoted). In command mode the child gets
  ``CUDA_VISIBLE_DEVICES=N`` and ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that it uses the GPU
  whose NVML index is sampled (the container equivalent of ``--gpus device=N``).
- time: wall clock around the whole run (container start, imports, model load included),
  rounded to 2 decimals as in ``load_json.py``.
- GPU memory: a sampler loops {whole-device used memory = total - free of GPU N (NVML
  index, as nvidia-smi numbers them), in MiB; sleep 0.1 s} while the run lasts.
  ``MaxGPU_Mem = round(max(samples))``; ``AUC_GPU_Time = round(sum(samples) * 0.1)`` MiB*s,
  a rectangle sum that assumes 0.1 s per sample even though each loop also spends the
  query time (organizers' quirk, reproduced). Rounding is numpy's (half to even).
- CPU and RAM, "for debug purpose": system-wide, as the organizers log them.
  ``MaxRAM`` = max of ``psutil.virtual_memory().used`` in MB (whole machine, so the
  container's memory is included); CPU utilisation per sample = ``100 - idle%`` with the
  organizers' formula ``idle% = 100 * d_idle / (d_user + d_system + d_idle + 0.1)`` (the
  ``+ 0.1`` biases short intervals towards "busy": with 0.1 s samples an idle 2-core
  machine reads about 33 %). Extra columns give the process tree's peak RSS (command mode:
  the shell and its children; docker mode: only the docker client, the container's
  processes are not its children) and an unbiased mean CPU busy %.
- Without a GPU (``pynvml.nvmlInit()`` raises, e.g. NVMLError_LibraryNotFound) time and
  RAM are still measured; the output says clearly that GPU memory was NOT measured and
  the GPU columns are empty.

Outputs in ``--out-dir``: ``efficiency.csv`` (rewritten after every case), ``samples/<input>.json``
(raw samples), ``curves/<input>.png`` (memory/CPU-time curves), ``predictions/<case>.nii.gz``
(the run's output, moved there).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from inference.atomic import write_csv, write_text

from .samplers import (SAMPLE_INTERVAL_S, GpuMemorySampler, MachineSampler, gpu_memory_summary,  # noqa: F401
                       organizers_cpu_used_percent)


__all__ = [
    "ResourceConfig",
    "GpuMemorySampler",
    "MachineSampler",
    "CaseMeasurement",
    "gpu_memory_summary",
    "organizers_cpu_used_percent",
    "docker_command",
    "output_name",
    "measure_case",
    "measure_folder",
    "CSV_COLUMNS",
]

CSV_COLUMNS = (
    # the organizers' columns (load_json.py) ...
    "Name",
    "Time",
    "MaxGPU_Mem",
    "AUC_GPU_Time",
    "MaxCPU_Utilization",
    "AUC_CPU_Time",
    "MaxRAM",
    "AUC_RAM_Time",
    # ... then ours, for debugging
    "GPU_Measured",
    "MaxRSS_ProcessTree_MB",
    "MeanCPU_Busy_Percent",
    "ReturnCode",
    "OutputWritten",
    "Samples",
)


def output_name(input_name: str) -> str:
    """Organizers' output naming: ``case.split('_0000.nii.gz')[0] + '.nii.gz'``.

    Edge case: a name without ``_0000.nii.gz`` (organizers: ``x.nii.gz.nii.gz``) maps to
    itself here (``x.nii.gz``).
    """
    if "_0000.nii.gz" in input_name:
        return input_name.split("_0000.nii.gz")[0] + ".nii.gz"
    return input_name if input_name.endswith(".nii.gz") else input_name + ".nii.gz"


@dataclass(frozen=True)
class ResourceConfig:
    """How to run and measure each case."""

    input_dir: Path
    out_dir: Path
    docker_image: str | None = None
    command: str | None = None  # shell template with {inputs} {outputs} {case} {gpu}
    gpu_index: int = 0
    docker_gpus: bool = True  # False: the docker command without --gpus (machines without a GPU runtime)
    interval_s: float = SAMPLE_INTERVAL_S
    cwd: Path | None = None
    timeout_s: float | None = None
    pause_s: float = 0.0
    work_dir: Path | None = None  # where the per-case temporary inputs/outputs folders are made
    cases: tuple[str, ...] | None = None  # input file names to run (default: every *.nii.gz)
    nvml: Any = None  # injected NVML module (tests); None = pynvml

    def __post_init__(self) -> None:
        if (self.docker_image is None) == (self.command is None):
            raise ValueError("give exactly one of docker_image and command")


@dataclass
class CaseMeasurement:
    """One case's measurement. GPU fields are None when GPU memory was not measured."""

    input_name: str
    case: str
    time_s: float
    returncode: int
    output_written: bool
    gpu_measured: bool
    max_gpu_mib: int | None
    auc_gpu_mib_s: int | None
    max_cpu_percent: float
    auc_cpu: float
    max_ram_mb: float
    auc_ram: int
    max_tree_rss_mb: float
    mean_cpu_busy_percent: float
    n_samples: int
    gpu_times_s: list[float]
    gpu_used_mib: list[float]
    ram_times_s: list[float]
    ram_used_mb: list[float]
    cpu_used_percent: list[float]
    tree_rss_mb: list[float]
    run_start_offset_s: float = 0.0  # when the run started, on the samples' time axis
    note: str = ""

    def csv_row(self) -> list[object]:
        return [
            self.input_name,
            f"{np.round(self.time_s, 2):.2f}",
            "" if self.max_gpu_mib is None else self.max_gpu_mib,
            "" if self.auc_gpu_mib_s is None else self.auc_gpu_mib_s,
            f"{self.max_cpu_percent:.2f}",
            f"{self.auc_cpu:.2f}",
            f"{self.max_ram_mb:.2f}",
            self.auc_ram,
            self.gpu_measured,
            f"{self.max_tree_rss_mb:.1f}",
            f"{self.mean_cpu_busy_percent:.1f}",
            self.returncode,
            self.output_written,
            self.n_samples,
        ]


def docker_command(image: str, container_name: str, inputs: Path, outputs: Path, gpu_index: int | None) -> list[str]:
    """The organizers' ``docker container run`` command as an argument list (``gpu_index`` None: without
    ``--gpus``, for a machine with no GPU runtime; the organizers always pass it)."""
    gpus = [] if gpu_index is None else [f"--gpus=device={gpu_index}"]
    return [
        "docker", "container", "run",
        "--shm-size=28gb", "-m", "28G", *gpus,
        "--name", container_name, "--rm",
        "-v", f"{inputs}/:/workspace/inputs/",
        "-v", f"{outputs}/:/workspace/outputs/",
        image, "/bin/bash", "-c", "sh predict.sh",
    ]  # fmt: skip


def _container_name(case: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in case)
    return f"flare_eval_{safe}_{os.getpid()}_{int(time.time() * 1000) % 100000}"


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def measure_case(config: ResourceConfig, input_path: Path, gpu: GpuMemorySampler) -> CaseMeasurement:
    """Run one case in fresh temporary inputs/outputs folders while sampling; move its output to out_dir/predictions."""
    input_name = input_path.name
    case = output_name(input_name)[: -len(".nii.gz")]
    work_root = Path(config.work_dir) if config.work_dir else None
    if work_root:
        work_root.mkdir(parents=True, exist_ok=True)
    temp_root = Path(tempfile.mkdtemp(prefix=f"flare_eval_{case}_", dir=work_root))
    inputs, outputs = temp_root / "inputs", temp_root / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    os.chmod(outputs, 0o777)  # a container may write as another user (the organizers chmod 777 too)
    shutil.copy(input_path, inputs / input_name)
    container = None
    if config.docker_image:
        container = _container_name(case)
        argv: list[str] | str = docker_command(config.docker_image, container, inputs.resolve(), outputs.resolve(),
                                                   config.gpu_index if config.docker_gpus else None)
        shell = False
        env = None
    else:
        argv = config.command.format(  # type: ignore[union-attr]
            inputs=shlex.quote(str(inputs.resolve())),
            outputs=shlex.quote(str(outputs.resolve())),
            case=shlex.quote(case),
            gpu=config.gpu_index,
        )
        shell = True
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(config.gpu_index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    import psutil

    cpu_start = psutil.cpu_times()
    sampler = MachineSampler(gpu, config.interval_s)
    sampler.start()  # like the organizers: the sampler starts before the clock
    note = ""
    t0 = time.perf_counter()
    try:
        process = subprocess.Popen(argv, shell=shell, cwd=config.cwd, env=env, start_new_session=True)
    except OSError as error:
        sampler.stop()
        shutil.rmtree(temp_root, ignore_errors=True)
        raise RuntimeError(f"{input_name}: cannot start {argv!r}: {error}") from error
    sampler.root_pid = process.pid
    try:
        returncode = process.wait(timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        if container:
            subprocess.run(["docker", "kill", container], capture_output=True, check=False)
        returncode = process.wait()
        note = f"killed after the {config.timeout_s} s timeout"
    time_s = time.perf_counter() - t0
    samples = sampler.stop()
    cpu_end = psutil.cpu_times()
    if sampler.error:
        note = (note + "; " if note else "") + f"sampler error: {sampler.error}"
    busy_delta = sum(cpu_end) - sum(cpu_start)
    mean_busy = 100.0 * (1.0 - (cpu_end.idle - cpu_start.idle) / busy_delta) if busy_delta > 0 else 0.0

    produced = outputs / f"{case}.nii.gz"
    output_written = produced.is_file()
    if output_written:
        destination = Path(config.out_dir) / "predictions" / produced.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(produced), destination)
    shutil.rmtree(temp_root, ignore_errors=True)

    gpu_measured = gpu.available and len(samples.gpu_used_mib) > 0
    max_gpu, auc_gpu = gpu_memory_summary(samples.gpu_used_mib, SAMPLE_INTERVAL_S) if gpu_measured else (None, None)
    cpu = samples.cpu_used_percent or [0.0]
    ram = samples.ram_used_mb or [0.0]
    # one keyword per measured field (the shape of eval/__main__'s config blocks, other fields)
    return CaseMeasurement(
        input_name=input_name,
        case=case,
        time_s=time_s,
        returncode=returncode,
        output_written=output_written,
        gpu_measured=gpu_measured,
        max_gpu_mib=max_gpu,
        auc_gpu_mib_s=auc_gpu,
        max_cpu_percent=float(np.round(max(cpu), 2)),
        auc_cpu=float(np.round(sum(cpu) * SAMPLE_INTERVAL_S, 2)),
        max_ram_mb=float(np.round(max(ram), 2)),
        auc_ram=int(np.round(sum(ram) * SAMPLE_INTERVAL_S)),
        max_tree_rss_mb=max(samples.tree_rss_mb or [0.0]),
        mean_cpu_busy_percent=mean_busy,
        n_samples=len(samples.times_s),
        gpu_times_s=samples.gpu_times_s,
        gpu_used_mib=samples.gpu_used_mib,
        ram_times_s=samples.times_s,
        ram_used_mb=samples.ram_used_mb,
        cpu_used_percent=samples.cpu_used_percent,
        tree_rss_mb=samples.tree_rss_mb,
        run_start_offset_s=t0 - sampler.started_at,
        note=note,
    )


def _input_files(config: ResourceConfig) -> list[Path]:
    folder = Path(config.input_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(".nii.gz"))
    if config.cases is not None:
        wanted = set(config.cases)
        unknown = wanted - {p.name for p in files}
        if unknown:
            raise FileNotFoundError(f"not in {folder}: {', '.join(sorted(unknown))}")
        files = [p for p in files if p.name in wanted]
    if not files:
        raise FileNotFoundError(f"no *.nii.gz input files in {folder}")
    return files


def measure_folder(config: ResourceConfig, log: Callable[[str], None] = print, plots: bool = True) -> list[CaseMeasurement]:
    """Measure every input file, one fresh run each; write CSV, raw samples and curves to out_dir."""
    files = _input_files(config)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = GpuMemorySampler(config.gpu_index, config.nvml)
    if gpu.available:
        log(f"GPU memory: sampling whole-device used memory of NVML GPU {config.gpu_index} every {config.interval_s} s")
    else:
        log(f"GPU memory NOT measured ({gpu.unavailable_reason}); measuring time, RAM and CPU only")
    results: list[CaseMeasurement] = []
    csv_path = out_dir / "efficiency.csv"
    try:
        for index, path in enumerate(files):
            if index and config.pause_s > 0:
                time.sleep(config.pause_s)
            measurement = measure_case(config, path, gpu)
            results.append(measurement)
            sample_record = {k: v for k, v in asdict(measurement).items()}
            write_text(out_dir / "samples" / f"{path.name[: -len('.nii.gz')]}.json", json.dumps(sample_record, indent=1),
                       mkdir=True)
            if plots:
                from .plots import resource_curves

                resource_curves(measurement, out_dir / "curves" / f"{path.name[: -len('.nii.gz')]}.png")
            write_csv(csv_path, CSV_COLUMNS, [m.csv_row() for m in results], mkdir=True)
            gpu_text = (
                f"max GPU {measurement.max_gpu_mib} MiB, AUC {measurement.auc_gpu_mib_s} MiB*s"
                if measurement.gpu_measured
                else "GPU not measured"
            )
            status = "" if measurement.returncode == 0 and measurement.output_written else (
                f"  PROBLEM: exit code {measurement.returncode}, output {'written' if measurement.output_written else 'MISSING'}"
            )
            note = f"  ({measurement.note})" if measurement.note else ""
            log(
                f"{path.name}: {measurement.time_s:.2f} s, {gpu_text}, max RAM {measurement.max_ram_mb:.0f} MB "
                f"(process tree {measurement.max_tree_rss_mb:.0f} MB){status}{note}"
            )
    finally:
        gpu.close()
    times = [m.time_s for m in results]
    log(f"{len(results)} cases, mean time {np.mean(times):.2f} s, max {np.max(times):.2f} s; CSV: {csv_path}")
    if not any(m.gpu_measured for m in results):
        log("NOTE: GPU memory was NOT measured (no NVML); MaxGPU_Mem and AUC_GPU_Time are empty")
    return results
