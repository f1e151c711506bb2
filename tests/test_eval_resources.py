"""`python -m eval resources`: GPU sampler with a fake NVML, and the per-case runner with a fake predict command."""
from __future__ import annotations

import csv
import itertools
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from eval.__main__ import main
from eval.resources import (
    CSV_COLUMNS,
    GpuMemorySampler,
    MachineSampler,
    ResourceConfig,
    docker_command,
    gpu_memory_summary,
    measure_folder,
    organizers_cpu_used_percent,
    output_name,
)

MIB = 1024 * 1024
TOTAL_BYTES = 80 * 1024 * MIB


class FakeNVML:
    """Stands in for pynvml: each memory query returns the next scripted used-MiB value (the last one repeats)."""

    class NVMLError_LibraryNotFound(Exception):
        pass

    def __init__(self, used_mib_script, fail_init=False, fail_handle=False):
        self.script = list(used_mib_script)
        self.calls = 0
        self.fail_init, self.fail_handle = fail_init, fail_handle
        self.initialised = self.shut_down = False
        self.handle_index = None

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlDeviceGetHandleByIndex(self, index):
        if self.fail_handle:
            raise RuntimeError("Invalid Argument")
        self.handle_index = index
        return ("handle", index)

    def nvmlDeviceGetMemoryInfo(self, handle):
        assert handle == ("handle", self.handle_index)
        used = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        free = TOTAL_BYTES - int(round(used * MIB))
        return SimpleNamespace(total=TOTAL_BYTES, free=free, used=TOTAL_BYTES - free)

    def nvmlShutdown(self):
        self.shut_down = True


def test_gpu_memory_summary_is_round_max_and_round_sum_times_0_1():
    assert gpu_memory_summary([100.0, 200.4, 300.6]) == (301, 60)  # sum 601.0 -> 60.1 -> 60
    assert gpu_memory_summary([480.0] * 50) == (480, 2400)
    assert gpu_memory_summary([1000.5, 2.5]) == (1000, 100)  # numpy rounds half to even: 1000.5 -> 1000, 100.3 -> 100
    with pytest.raises(ValueError):
        gpu_memory_summary([])


def test_sampler_reads_total_minus_free_in_mib_from_fake_nvml():
    fake = FakeNVML([480.0, 1101.0, 4567.0, 620.5])
    sampler = GpuMemorySampler(gpu_index=3, nvml=fake)
    assert sampler.available and fake.initialised and fake.handle_index == 3
    values = [sampler.used_mib() for _ in range(4)]
    assert values == [480.0, 1101.0, 4567.0, 620.5]
    assert gpu_memory_summary(values) == (4567, round((480 + 1101 + 4567 + 620.5) * 0.1))
    sampler.close()
    assert fake.shut_down and not sampler.available


def test_sampler_without_nvml_library_is_unavailable_with_reason():
    sampler = GpuMemorySampler(nvml=FakeNVML([0.0], fail_init=True))
    assert not sampler.available
    assert "NVMLError_LibraryNotFound" in sampler.unavailable_reason
    missing_gpu = FakeNVML([0.0], fail_handle=True)
    sampler = GpuMemorySampler(gpu_index=7, nvml=missing_gpu)
    assert not sampler.available and "index 7" in sampler.unavailable_reason and missing_gpu.shut_down


def test_real_pynvml_is_guarded():
    sampler = GpuMemorySampler()
    try:
        if sampler.available:
            assert sampler.used_mib() > 0
        else:
            assert sampler.unavailable_reason
    finally:
        sampler.close()


def test_threaded_sampler_max_and_auc_arithmetic():
    fake = FakeNVML([1000.0])
    sampler = MachineSampler(GpuMemorySampler(nvml=fake), interval_s=0.1)
    sampler.start()
    time.sleep(0.45)
    samples = sampler.stop()
    n = len(samples.gpu_used_mib)
    assert 3 <= n <= 6 and n == fake.calls
    assert gpu_memory_summary(samples.gpu_used_mib) == (1000, 100 * n)
    assert len(samples.ram_used_mb) == len(samples.cpu_used_percent) == n
    gaps = [b - a for a, b in itertools.pairwise(samples.gpu_times_s)]
    assert all(0.09 <= g < 0.5 for g in gaps)


def test_organizers_cpu_formula():
    # 0.2 s of CPU time, all idle: the organizers' +0.1 reports 33.3 % busy
    assert organizers_cpu_used_percent([10.0, 5.0, 100.0], [10.0, 5.0, 100.2]) == pytest.approx(100 / 3)
    assert organizers_cpu_used_percent([0, 0, 0], [0.9, 0.0, 0.0]) == pytest.approx(100.0)


def test_output_name_and_docker_command():
    assert output_name("amos_0540_0000.nii.gz") == "amos_0540.nii.gz"
    assert output_name("fdg_x_0000.nii.gz") == "fdg_x.nii.gz"
    assert docker_command("team:latest", "c1", Path("/tmp/in"), Path("/tmp/out"), 1) == [
        "docker", "container", "run", "--shm-size=28gb", "-m", "28G", "--gpus=device=1", "--name", "c1", "--rm",
        "-v", "/tmp/in/:/workspace/inputs/", "-v", "/tmp/out/:/workspace/outputs/",
        "team:latest", "/bin/bash", "-c", "sh predict.sh",
    ]  # fmt: skip


# A stand-in for `sh predict.sh IN OUT`: exactly one input must be present; copy it to the output name; sleep 0.3 s.
FAKE_PREDICT = (
    "import glob, os, shutil, sys, time; "
    "files = os.listdir(sys.argv[1]); "
    "assert len(files) == 1, files; "
    "shutil.copy(os.path.join(sys.argv[1], files[0]), os.path.join(sys.argv[2], files[0].replace('_0000.nii.gz', '.nii.gz'))); "
    "time.sleep(0.3)"
)


def _fake_command(extra: str = "") -> str:
    return f'"{sys.executable}" -c "{FAKE_PREDICT}{extra}" {{inputs}} {{outputs}}'


@pytest.fixture()
def input_dir(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for case in ("amos_0001", "fdg_0002"):
        (folder / f"{case}_0000.nii.gz").write_bytes(case.encode() * 10)
    return folder


def _read_csv(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_measure_folder_with_fake_command_and_fake_gpu(input_dir, tmp_path):
    ramp = [480.0 + 100.0 * k for k in range(40)]
    fake = FakeNVML(ramp)
    out = tmp_path / "out"
    config = ResourceConfig(input_dir=input_dir, out_dir=out, command=_fake_command(), nvml=fake, work_dir=tmp_path / "work")
    lines: list[str] = []
    results = measure_folder(config, log=lines.append)
    assert [m.case for m in results] == ["amos_0001", "fdg_0002"]
    for m in results:
        assert m.returncode == 0 and m.output_written
        assert 0.3 <= m.time_s < 10
        assert m.gpu_measured and m.n_samples >= 3
        # per-case numbers follow from that case's own samples
        assert m.max_gpu_mib == round(max(m.gpu_used_mib))
        assert m.auc_gpu_mib_s == round(sum(m.gpu_used_mib) * 0.1)
        record = json.loads((out / "samples" / f"{m.case}_0000.json").read_text())
        assert record["gpu_used_mib"] == m.gpu_used_mib
        assert (out / "curves" / f"{m.case}_0000.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "predictions" / f"{m.case}.nii.gz").read_bytes() == (input_dir / f"{m.case}_0000.nii.gz").read_bytes()
    # the samples are consecutive values of the ramp across both cases
    all_samples = results[0].gpu_used_mib + results[1].gpu_used_mib
    assert all_samples == ramp[: len(all_samples)]
    assert fake.shut_down
    rows = _read_csv(out / "efficiency.csv")
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["Name"] for r in rows] == ["amos_0001_0000.nii.gz", "fdg_0002_0000.nii.gz"]
    assert int(rows[1]["MaxGPU_Mem"]) == results[1].max_gpu_mib and int(rows[1]["AUC_GPU_Time"]) == results[1].auc_gpu_mib_s
    assert float(rows[0]["Time"]) == pytest.approx(results[0].time_s, abs=0.006)
    assert any("sampling whole-device used memory" in line for line in lines)
    assert not list((tmp_path / "work").iterdir())  # temporary case folders removed


def test_without_gpu_still_measures_time_and_ram(input_dir, tmp_path):
    out = tmp_path / "out"
    config = ResourceConfig(
        input_dir=input_dir, out_dir=out, command=_fake_command(), nvml=FakeNVML([0.0], fail_init=True), cases=("amos_0001_0000.nii.gz",)
    )
    lines: list[str] = []
    (m,) = measure_folder(config, log=lines.append, plots=False)
    assert not m.gpu_measured and m.max_gpu_mib is None and m.auc_gpu_mib_s is None
    assert m.time_s >= 0.3 and m.max_ram_mb > 0 and m.max_tree_rss_mb > 0
    assert "GPU memory NOT measured" in lines[0] and "NVMLError_LibraryNotFound" in lines[0]
    assert any("GPU memory was NOT measured" in line for line in lines)
    row = _read_csv(out / "efficiency.csv")[0]
    assert row["MaxGPU_Mem"] == "" and row["AUC_GPU_Time"] == "" and row["GPU_Measured"] == "False"


def test_failed_and_timed_out_runs_are_reported(input_dir, tmp_path):
    failing = ResourceConfig(input_dir=input_dir, out_dir=tmp_path / "a", command="exit 3", nvml=FakeNVML([1.0]))
    results = measure_folder(failing, log=lambda _: None, plots=False)
    assert all(m.returncode == 3 and not m.output_written for m in results)
    slow = ResourceConfig(
        input_dir=input_dir, out_dir=tmp_path / "b", command="sleep 20", nvml=FakeNVML([1.0]), timeout_s=0.5,
        cases=("fdg_0002_0000.nii.gz",),
    )
    start = time.perf_counter()
    (m,) = measure_folder(slow, log=lambda _: None, plots=False)
    assert time.perf_counter() - start < 5
    assert m.returncode != 0 and "timeout" in m.note


def test_cli_resources_on_this_machine(input_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["resources", str(input_dir), "--out-dir", str(out), "--command", _fake_command(), "--cases", "amos_0001_0000.nii.gz"])
    assert code == 0
    printed = capsys.readouterr().out
    gpu = GpuMemorySampler()
    try:
        expected = "sampling whole-device used memory" if gpu.available else "GPU memory NOT measured"
    finally:
        gpu.close()
    assert expected in printed
    assert len(_read_csv(out / "efficiency.csv")) == 1
    assert main(["resources", str(input_dir), "--out-dir", str(out), "--command", "exit 1", "--no-plots"]) == 2
    assert main(["resources", str(tmp_path / "none"), "--out-dir", str(out), "--command", "true"]) == 1


def test_config_needs_exactly_one_way_to_run(tmp_path):
    with pytest.raises(ValueError):
        ResourceConfig(input_dir=tmp_path, out_dir=tmp_path)
    with pytest.raises(ValueError):
        ResourceConfig(input_dir=tmp_path, out_dir=tmp_path, docker_image="x", command="y")


FAKE_DOCKER = '''#!{python}
import json, os, shutil, sys, time
args = sys.argv[1:]
specs = [args[i + 1].split(":/workspace/") for i, a in enumerate(args) if a == "-v"]
mounts = {{"/workspace/" + target.rstrip("/"): host.rstrip("/") for host, target in specs}}
host_in, host_out = mounts["/workspace/inputs"], mounts["/workspace/outputs"]
files = os.listdir(host_in)
assert len(files) == 1, files
shutil.copy(os.path.join(host_in, files[0]), os.path.join(host_out, files[0].split("_0000.nii.gz")[0] + ".nii.gz"))
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
time.sleep(0.2)
'''


def test_docker_mode_runs_the_organizers_command(input_dir, tmp_path, monkeypatch):
    """A fake `docker` on PATH checks the mounts and plays the container's part."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    out = tmp_path / "out"
    config = ResourceConfig(input_dir=input_dir, out_dir=out, docker_image="team:latest", gpu_index=2, nvml=FakeNVML([700.0]))
    results = measure_folder(config, log=lambda _: None, plots=False)
    assert all(m.returncode == 0 and m.output_written and m.max_gpu_mib == 700 for m in results)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2
    for call in calls:
        assert call[:7] == ["container", "run", "--shm-size=28gb", "-m", "28G", "--gpus=device=2", "--name"]
        assert call[-4:] == ["team:latest", "/bin/bash", "-c", "sh predict.sh"]
    assert calls[0][7] != calls[1][7]  # a fresh container name per case
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["amos_0001.nii.gz", "fdg_0002.nii.gz"]


def test_docker_command_without_gpus_for_machines_without_a_gpu_runtime():
    cmd = docker_command("team:latest", "c1", Path("/tmp/in"), Path("/tmp/out"), None)
    assert not any(a.startswith("--gpus") for a in cmd)
    assert cmd[:3] == ["docker", "container", "run"] and cmd[-3:] == ["/bin/bash", "-c", "sh predict.sh"]
