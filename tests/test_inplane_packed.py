"""Every row of the in-plane benchmark from a pack (training/inplane/packed.py): the lent GPU machine's path, run here
on the CPU with SimpleITK made unimportable (the GPU machine has none)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from training.inplane import protocol
from training.inplane.data import IGNORE, Volume, label_map
from training.inplane.pack import load_packed, pack_grid, packed_set, read_meta, stats_key, write_pack
from training.inplane.steps import row_steps
from training.inplane.recipe import load_profile

from helpers import REAL

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "benchmarks" / "results" / "inplane-cpu-2core"
GAN = {"spacing_mm": 8.0, "slice_size": 32, "body_crop": True, "ngf": 4, "n_blocks": 1, "ndf": 4, "n_layers_d": 2,
       "seg_filters": 4, "seg_depth": 2, "epochs": 2, "decay_epochs": 1, "iterations_per_epoch": 2, "num_workers": 0,
       "quality_every": 1, "grid_cases": 1, "grid_slices": 1, "val_fraction": 0.5}


def _no_simpleitk_env(tmp_path: Path) -> dict:
    """An environment in which `import SimpleITK` fails, in this process's children and theirs."""
    fake = tmp_path / "no_sitk"
    fake.mkdir(exist_ok=True)
    (fake / "SimpleITK.py").write_text("raise ImportError('SimpleITK is not on the GPU machine (test stand-in)')\n")
    return {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}


def _run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.inplane", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def _volume(name: str, window=(-100.0, 300.0)) -> Volume:
    labels = np.zeros((3, 10, 12), np.uint8)
    labels[1, 2:6, 3:7] = 1
    image = (np.arange(360, dtype=np.float32).reshape(3, 10, 12) / 359).astype(np.float16)
    return Volume(name, image, labels, labels.copy(), (5.0, 2.0, 2.0), ((2, 6), (3, 7)), (0, 3), window)


def test_a_pack_keeps_sets_windows_and_refuses_other_files(tmp_path):
    """Sets and each scan's intensity window travel with the volumes: raw() gives the scan's intensities back
    (to the uint8 step of the window); a file that is no pack of this format is refused with its name."""
    path = write_pack(tmp_path / "p.npz", [_volume("a"), _volume("b", None)], {"src": ["a"], "other": ["b"]},
                      {"note": 1})
    assert packed_set(path, "src") == ["a"] and read_meta(path)["note"] == 1
    a, b = load_packed(path, (None, 2.0, 2.0), ["a", "b"])
    assert a.window == (-100.0, 300.0) and b.window is None
    expected = -100.0 + _volume("a").image.astype(np.float32) * 400.0
    assert np.abs(a.raw() - expected).max() <= 400.0 / 255 / 2 + 1e-3
    assert label_map(a)[1, 3, 4] == 3 and label_map(a)[0, 0, 0] == 0
    with pytest.raises(ValueError, match="intensity window"):
        b.raw()
    with pytest.raises(ValueError, match="no set 'test'"):
        packed_set(path, "test")
    old = tmp_path / "old.npz"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("meta.npy", b"not an array")
    with pytest.raises(ValueError, match="old.npz"):
        read_meta(old)
    with pytest.raises(ValueError, match="not on one in-plane grid"):
        bad = _volume("c")
        write_pack(tmp_path / "q.npz", [_volume("a"), Volume(**{**bad.__dict__, "spacing_mm": (5.0, 3.0, 3.0)})],
                   {})


def test_the_graph_of_the_cpu_profile_orders_every_row_after_what_it_learns_from(tmp_path):
    prof = load_profile("cpu")
    rows = [r for r, row in prof.rows.items() if row.trainer == "inplane"]
    steps = {s.name: s for s in row_steps(tmp_path, prof, "cpu", rows, tmp_path / "p.npz", device="cuda",
                                          score=False)}
    assert set(steps) == ({"coarse", "cyclegan.attention", "cyclegan.plain", "rP.render", "rP.coarse"}
                          | {f"r{r}.fine" for r in rows} | {f"r{r}.pseudo" for r in rows if prof.rows[r].selftrain})
    assert {"r3.pseudo", "rA3.pseudo", "rRA.pseudo"} <= set(steps)
    assert set(steps["rRA.fine"].deps) == {"rRA.pseudo", "rA3.fine"}
    assert set(steps["r3.pseudo"].deps) == {"r2.fine", "rA.fine", "coarse"}
    assert set(steps["r3.fine"].deps) == {"cyclegan.attention", "r3.pseudo", "r2.fine"}
    assert set(steps["rA3.fine"].deps) == {"rA3.pseudo", "rA.fine"} and steps["rAc.fine"].deps == ("rA.fine",)
    assert steps["rP.coarse"].deps == ("rP.render",) and steps["rP.fine"].deps == ("rP.render",)
    assert steps["r1.fine"].deps == () and steps["coarse"].deps == ()
    assert steps["rRAs6.fine"].deps == ("rRA6q.fine", "rRA6z.fine")   # a weight soup waits for the rows it averages
    # every step is a process of the package on the pack, with the device asked for
    assert all(s.argv[1:3] == ["-m", "training.inplane"] and "--packed" in s.argv and "cuda" in s.argv
               for s in steps.values())
    assert steps["coarse"].argv[steps["coarse"].argv.index("--row") + 1] == prof.coarse_row
    with pytest.raises(ValueError, match="no row 'Z'"):
        row_steps(tmp_path, prof, "cpu", ["Z"], tmp_path / "p.npz")
    # without a pack: the work folder makes its own from the real data first, every step after it; scored rows
    # end in export and score (the engine on the real scans, in this process)
    made = {s.name: s for s in row_steps(tmp_path, prof, "cpu", ["RAd", "C3"])}
    assert made["pack"].func is not None and made["pack"].settings["flare22"] is True
    assert made["pack"].settings["stats"] == ["btcv"]      # both rows filter on BTCV's large organs
    assert stats_key("mri_large") == "btcv" and stats_key("mri") == "btcv+flare22"   # the duodenum: FLARE22
    assert all("pack" in s.deps for n, s in made.items() if n != "pack" and not n.endswith((".export", ".score"))
               and not n.startswith("rC3.") or n == "rC3.sources")
    assert made["rRAd.export"].deps == ("coarse", "rRAd.fine") and made["rRAd.score"].deps == ("rRAd.export",)
    assert set(made["rC3.sources"].deps) == {"pack", "rC3.pseudo"} and made["rC3.score"].deps == ("rC3.export",)


def _small_pack(tmp_path, monkeypatch, profile: str, targets: tuple[str, ...]) -> Path:
    from training.inplane.pack import pack

    if not all((REAL / "ct_btcv" / "imagesTr" / f"{c}_0000.nii.gz").is_file() for c in ("btcv_0001", "btcv_0002")):
        pytest.skip("needs ../shared/data/real")
    monkeypatch.setattr(protocol, "BTCV_CASES", ("btcv_0001", "btcv_0002"))
    monkeypatch.setattr(protocol, "TARGET_CASES", targets)
    return pack(tmp_path / "pack.npz", profile, REAL)


@pytest.mark.slow
def test_translator_pet_and_continued_rows_train_from_a_pack_without_simpleitk_and_score_here(tmp_path,
                                                                                                 monkeypatch):
    """Rows 2b (plain CycleGAN), P (PET renders, own coarse stage) and Ac (from row A's weights) with tiny
    networks, two steps at once, in processes that cannot import SimpleITK; then exported and scored here (the
    engine on the real CHAOS test scans and FDG PET scans) and published with the translator's curve."""
    gan = tmp_path / "gan.json"
    gan.write_text(json.dumps(GAN))
    tiny = {"features": [4, 8], "patch": [32, 32], "batch": 2, "iterations": 2, "time_budget_s": None,
            "eval_every_s": 0}
    prof = tmp_path / "tiny.json"
    prof.write_text(json.dumps({"extends": "cpu", "name": "tiny", "cyclegan": str(gan),
                                "coarse": {**tiny, "spacing_mm": [None, 8.0, 8.0]},
                                "fine": {**tiny, "spacing_mm": [None, 4.0, 4.0]},
                                "rows": {"P": {"render_variants": 1}, "Ac": {"fine": {"time_budget_s": None}}}}))
    pack = _small_pack(tmp_path, monkeypatch, str(prof), ("chaos_t2_05",))
    work = tmp_path / "work"
    argv = ["run-packed", "--work", str(work), "--profile", str(prof), "--packed", str(pack), "--rows", "2b,P,Ac",
            "--jobs", "2", "--threads", "1"]
    proc = _run(argv, _no_simpleitk_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in ("coarse", "rA.fine", "rAc.fine", "cyclegan.plain", "r2b.fine", "rP.render", "rP.coarse", "rP.fine"):
        assert (work / "state" / f"{step}.json").is_file(), step

    def volumes(stage: str) -> list[str]:
        return json.loads((work / stage / "summary.json").read_text())["volumes"]

    assert volumes("rows/2b/fine") == ["btcv_0001", "btcv_0002"] * 2          # CT, then translated CT
    assert volumes("rows/P/coarse") == volumes("rows/P/fine") == ["btcv_0001_pet0", "btcv_0002_pet0"]
    assert (work / "cyclegan" / "plain" / "quality_curve.csv").is_file()
    renders = load_packed(work / "rows/P/render/pet.npz", (None, 4.0, 4.0), packed_set(work / "rows/P/render/pet.npz",
                                                                                    "all"))
    ct = load_packed(pack, (None, 4.0, 4.0), ["btcv_0001"])[0]
    assert renders[0].image.shape[0] > ct.image.shape[0]                   # the body goes on above and below
    assert renders[0].image.shape[1:] == ct.image.shape[1:]
    # a second run finds everything done
    again = _run(argv, _no_simpleitk_env(tmp_path))
    assert again.returncode == 0 and "0 step(s) run, 8 already done" in again.stdout, again.stdout + again.stderr
    # a changed translator option re-runs the translator and the row trained on its images, nothing else
    gan.write_text(json.dumps({**GAN, "ngf": 2}))
    changed = _run(argv, _no_simpleitk_env(tmp_path))
    assert changed.returncode == 0 and "2 step(s) run, 6 already done" in changed.stdout, changed.stdout
    assert json.loads((work / "cyclegan" / "plain" / "options.json").read_text())["ngf"] == 2

    scored = _run(["score-trained", "--work", str(work), "--profile", str(prof), "--rows", "P,Ac,1"])
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert (work / "scores" / "rAc" / "scores.csv").is_file() and (work / "scores" / "rP" / "pet_check.csv").is_file()
    assert not (work / "scores" / "r1").exists()                            # row 1 was not trained
    from training.inplane.bench import publish

    publish(work, str(prof), tmp_path / "results")
    assert (tmp_path / "results" / "cyclegan" / "plain" / "quality_curve.csv").is_file()
    # the picture grids are renders of the (real) training scans: they stay in the work folder, never published
    assert list((work / "cyclegan" / "plain" / "grids").glob("*.png"))
    assert not (tmp_path / "results" / "cyclegan" / "plain" / "grids").exists()
    # the published translator seeds a new work folder: the same translated CT, with no training
    from training.inplane.bench import seed_work
    from training.inplane.packed import prepare_translator

    work3 = tmp_path / "work3"
    assert work3 / "cyclegan" / "plain" in seed_work(tmp_path / "results", work3)
    assert not (work3 / "cyclegan" / "plain" / "loss_log.jsonl").exists()
    again = prepare_translator(work3, load_profile(str(prof)), "plain", pack)
    assert not (work3 / "cyclegan" / "plain" / "loss_log.jsonl").exists()          # translated, not trained
    first = work / "cyclegan" / "plain" / "synthetic.npz"
    for a, b in zip(load_packed(first, (None, 4.0, 4.0), packed_set(first, "all")),
                    load_packed(again, (None, 4.0, 4.0), packed_set(again, "all")), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.image, b.image)


@pytest.mark.slow
def test_self_training_from_a_pack_pseudo_labels_the_target_scans_with_the_published_teachers(tmp_path,
                                                                                              monkeypatch):
    """Row 3 from a pack with its teachers (rows 2 and A) and the shared coarse stage seeded from the published
    CPU run: the tiny translator trains and translates, the teachers (exported without ONNX, to WORK/teachers)
    segment two target scans with the engine on arrays, the filter writes Table 4 and keeps what passes, and the
    kept scans' training labels agree with their true labels (the geometry of the pack's grid is kept throughout)."""
    from training.inplane.bench import seed_work

    if not (PUBLISHED / "stages" / "rows" / "2" / "fine" / "final.pt").is_file():
        pytest.skip("published stages of the CPU run missing")
    gan = tmp_path / "gan.json"
    gan.write_text(json.dumps(GAN))
    prof = tmp_path / "seeded.json"
    prof.write_text(json.dumps({"extends": "cpu", "name": "seeded", "cyclegan": str(gan), "rows": {"3": {"fine": {
        "iterations": 2, "time_budget_s": None, "batch": 2, "eval_every_s": 0}}}}))
    pack = _small_pack(tmp_path, monkeypatch, str(prof), ("chaos_t2_05", "chaos_t2_22"))
    work = tmp_path / "work"
    seed_work(PUBLISHED, work)
    proc = _run(["run-packed", "--work", str(work), "--profile", str(prof), "--packed", str(pack), "--rows", "3",
                 "--jobs", "2", "--threads", "1"], _no_simpleitk_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 already done" in proc.stdout                   # the seeded stages are adopted by their steps
    assert json.loads((work / "rows/2/fine/summary.json").read_text()) == json.loads(
        (PUBLISHED / "stages/rows/2/fine/summary.json").read_text())       # not retrained
    table4 = json.loads((work / "rows/3/pseudo/filtered/table4.json").read_text())
    assert table4["total"] == 2 and table4["class_number"] == 2 and table4["top_k_dice"] >= 1
    for t in ("r2", "rA"):   # exported for their predictions beside, never over, WORK/models (export, ship)
        card = json.loads((work / "teachers" / t / "model.json").read_text())
        assert not any("onnx" in card[s]["files"] for s in ("coarse", "fine"))
        assert not (work / "models" / t).exists()
    kept = packed_set(work / "rows/3/pseudo/pseudo.npz", "all")
    assert 1 <= len(kept) == table4["top_k_dice"]
    grid = pack_grid(pack)
    for name in kept:
        pseudo = label_map(load_packed(work / "rows/3/pseudo/pseudo.npz", grid, [name])[0])
        truth = label_map(load_packed(pack, grid, [name])[0])          # CHAOS: liver, kidneys, spleen
        assert pseudo.shape == truth.shape and (pseudo == IGNORE).mean() < 0.2
        for organ in (1, 2, 3, 13):
            p, t = pseudo == organ, truth == organ
            assert 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.5, (name, organ)
    summary = json.loads((work / "rows/3/fine/summary.json").read_text())
    assert summary["volumes"] == ["btcv_0001", "btcv_0002"] * 2 + kept and summary["iterations"] == 2


def test_pseudo_labels_need_each_teacher_trained_here_or_seeded_from_a_shipped_model(tmp_path):
    """A teacher is exported from its stages when it was trained here; a teacher put in WORK/models by `seed --model`
    (a shipped ONNX model, no trained stages) is used as it is and never removed; with neither, the error says how
    to give it."""
    from training.inplane.packed import prepare_pseudo

    pack = write_pack(tmp_path / "p.npz", [_volume("t1")], {"chaos_target": ["t1"]}, {"stats": {"btcv": {}}})
    prof = load_profile("cpu")
    with pytest.raises(ValueError, match=r"teacher A: .*seed --model A=DIR"):
        prepare_pseudo(tmp_path / "work", prof, "A3", pack)
    seeded = tmp_path / "work" / "models" / "rA"
    seeded.mkdir(parents=True)
    (seeded / "model.json").write_text("{ a shipped card }")
    with pytest.raises(ValueError):                # the engine refuses the broken card ...
        prepare_pseudo(tmp_path / "work", prof, "A3", pack)
    assert (seeded / "model.json").read_text() == "{ a shipped card }"   # ... and it is kept as given
