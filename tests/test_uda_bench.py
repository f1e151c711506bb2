"""UDA benchmark: protocol, profiles, the step graph and a tiny real run of row 1 (the runner: test_runner.py)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from training import pet_check
from training.pet_check import PET_CASES
from training.uda_bench.protocol import (MRI_ROWS, PROFILE_DIR, ROWS, SOURCE_CASES, TARGET_CASES, TEST_CASES,
                                         StageRun, load_profile)
from training.uda_bench.steps import build_steps, write_inputs

from helpers import REAL


def test_protocol_case_lists_are_disjoint():
    s, t, e = set(SOURCE_CASES), set(TARGET_CASES), set(TEST_CASES)
    assert not (s & t) and not (s & e) and not (t & e)
    assert len(s) == 6 and len(t) == 4 and len(e) == 4


def test_profiles_load_and_reject_unknown_keys(tmp_path):
    names = sorted(f.stem for f in PROFILE_DIR.glob("*.json"))
    assert {"gpu", "gpu_9min", "gpu_10min", "gpu_pet", "gpu_r", "smoke", "cpu_pet"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert isinstance(p.fine, StageRun) and p.name == name
    d = load_profile("smoke").to_dict()
    d["epochz"] = 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="epochz"):
        load_profile(str(bad))
    with pytest.raises(FileNotFoundError, match="built-in"):
        load_profile("nope")
    assert StageRun(2, 3, 1, 9.5).args() == ["--epochs", "2", "--iterations", "3", "--val-iterations", "1",
                                               "--time-budget", "9.5"]


def test_step_graph_is_closed_and_ordered(tmp_path):
    profile = load_profile("smoke")
    steps = build_steps(tmp_path, REAL, profile, ROWS, "cpu")
    names = [s.name for s in steps]
    assert len(names) == len(set(names))
    seen: set[str] = set()
    for s in steps:
        assert set(s.deps) <= seen, (s.name, set(s.deps) - seen)  # listed after everything it waits for
        seen.add(s.name)
    for row in ROWS:
        assert f"r{row}.score" in names
    # row 3 pulls in the two CycleGAN rows it needs (best r2, second r2b), nothing else
    only3 = {s.name for s in build_steps(tmp_path, REAL, profile, ("3",), "cpu")}
    assert {"r2.export", "r2b.export", "r3.cycle", "r3.score", "stats"} <= only3
    assert not any(n.startswith(("r1.", "r4.")) for n in only3)
    cycle = next(s for s in steps if s.name == "r3.cycle")
    assert cycle.argv[cycle.argv.index("--best") + 1] == "r2" and cycle.argv[cycle.argv.index("--second") + 1] == "r2b"
    # the row-4 upper bound is the only row that reads the target labels
    for s in steps:
        uses_labels = s.argv is not None and any("target_labels" in a for a in s.argv)
        assert uses_labels == (s.name == "r4.convert"), s.name
    # the cycle's CHAOS targets are MRI scans filtered on the four scored organs: both models it predicts with
    # must serve that modality (a 'pet' modality here stopped the 2026-11-27 H100 run: r2's card lists MRI only)
    from training.selftrain.cycle import TargetSet

    target = TargetSet.parse(cycle.argv[cycle.argv.index("--targets") + 1])
    assert (target.target_set, target.modality) == ("pet", "mri")
    for row in ("2", "2b"):
        export = next(s for s in steps if s.name == f"r{row}.export").argv
        assert target.modality.upper() in export[export.index("--modalities") + 1:export.index("--no-onnx")]
    with pytest.raises(ValueError, match="unknown rows"):
        build_steps(tmp_path, REAL, profile, ("5",), "cpu")


def test_pet_row_translates_towards_the_pet_scans_and_exports_a_pet_model(tmp_path):
    profile = load_profile("smoke")
    steps = {s.name: s for s in build_steps(tmp_path, REAL, profile, ("2", "P"), "cpu")}
    train = steps["cg_pet.train"].argv
    assert train[train.index("--target-images") + 1] == str(tmp_path / "data/pet_images")
    assert train[train.index("--threads") + 1] == "1"   # the smoke profile's CycleGAN CPU threads
    two = {s.name: s for s in build_steps(tmp_path, REAL, replace(profile, cyclegan_cpu_threads=2), ("P",), "cpu")}
    assert two["cg_pet.train"].argv[two["cg_pet.train"].argv.index("--threads") + 1] == "2"
    assert two["rP.coarse"].argv[two["rP.coarse"].argv.index("--threads") + 1] == "1"  # trainings share the CPU
    mri = steps["cg_attn.train"].argv
    assert mri[mri.index("--target-images") + 1] == str(tmp_path / "data/target_images")
    convert = steps["rP.convert"].argv
    assert f"synpet={tmp_path / 'syn/pet/images'},{tmp_path / 'syn/pet/labels'}" in convert
    assert steps["rP.convert"].deps == ("cg_pet.translate",)

    def modalities(step):
        argv = steps[step].argv
        i = argv.index("--modalities") + 1
        return argv[i:argv.index("--no-onnx")]

    assert modalities("rP.export") == ["PET"] and modalities("r2.export") == ["MRI"]
    assert steps["rP.score"].deps == ("rP.export",)
    # the CycleGAN option files: the PET one translates towards PET, with attention
    write_inputs(tmp_path, profile)
    opts = json.loads((tmp_path / "inputs/cyclegan_pet.json").read_text())
    assert opts["target_modality"] == "pet" and opts["attention"] is True
    # rows without P never link (or need) the PET scans
    assert not [s.name for s in build_steps(tmp_path, REAL, profile, ("1", "2", "2b", "3", "4"), "cpu")
                if s.name.startswith(("rP.", "cg_pet."))]


@pytest.mark.parametrize("row, render, tag, folder, modality", [
    ("PR", "pet_render", "petrender", "pet_render", "PET"),   # FDG-PET-like renders: a PET model
    ("R", "synth_render", "synth", "synth_render", "MRI"),    # random-contrast renders: scored on the CHAOS MRI
])
def test_rendered_rows_train_on_their_renders_only(tmp_path, row, render, tag, folder, modality):
    profile = load_profile("smoke")
    steps = {s.name: s for s in build_steps(tmp_path, REAL, profile, (row,), "cpu")}
    assert steps[render].deps == ("body",) and steps[f"r{row}.convert"].deps == (render,)
    convert = steps[f"r{row}.convert"].argv
    sources = [convert[i + 1] for i, a in enumerate(convert) if a == "--source"]
    assert sources == [f"{tag}={tmp_path / folder / 'images'},{tmp_path / folder / 'labels'}"]
    export = steps[f"r{row}.export"].argv
    assert export[export.index("--modalities") + 1:export.index("--no-onnx")] == [modality]
    assert steps[f"r{row}.score"].deps == (f"r{row}.export",)
    assert (row in MRI_ROWS) == (modality == "MRI")
    assert not any(n.startswith(("cg_", "r2.", "r1.")) for n in steps)   # no CycleGAN, no other row
    assert "render" not in steps                                          # nor the CT renders
    assert "render" in {s.name for s in build_steps(tmp_path, REAL, profile, (row, "1"), "cpu")}
    assert not any(s.argv and any("target_labels" in a for a in s.argv) for s in steps.values())


def test_variant_renders_refuse_an_unknown_kind(tmp_path):
    from training.render import render_variants_folder

    with pytest.raises(ValueError, match="kind"):
        render_variants_folder(tmp_path, tmp_path, [], tmp_path, kind="mri")


@pytest.mark.skipif(not (REAL / "pet_fdg").is_dir(), reason="needs ../shared/data/real")
def test_prepare_data_links_the_pet_scans_only_for_row_p(tmp_path):
    from training.uda_bench.steps import prepare_data

    prepare_data(REAL, tmp_path / "a")
    assert not (tmp_path / "a/data/pet_images").exists()
    prepare_data(REAL, tmp_path / "b", pet=True)
    linked = sorted(p.name for p in (tmp_path / "b/data/pet_images").iterdir())
    assert linked == [f"{c}_0000.nii.gz" for c in PET_CASES]
    with pytest.raises(FileNotFoundError, match="pet_fdg"):
        prepare_data(tmp_path / "nowhere", tmp_path / "c", pet=True)


def _pet_label_map(path: Path, spacing, organs_voxels: dict[int, int], shape=(40, 30, 30)) -> None:
    import numpy as np
    import SimpleITK as sitk

    arr = np.zeros(shape, np.uint8).ravel()
    start = 0
    for organ, n in organs_voxels.items():
        arr[start:start + n] = organ
        start += n
    img = sitk.GetImageFromArray(arr.reshape(shape))
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def test_pet_check_measures_volumes_in_ml_and_flags_implausible_organs(tmp_path, monkeypatch):
    import training.uda_bench.report as report

    # 10 mm voxels = 1 ml each: liver 1500 ml (plausible), right kidney 10 ml (too small), spleen 200 ml,
    # left kidney 150 ml, in the first scan; the second scan has no organs at all
    def fake_predict(work, row, images, device, backend, threads, extra=()):
        assert images == work / "data/pet_images" and extra == ("--no-tta",)
        pred = work / "pred" / f"r{row}"
        _pet_label_map(pred / f"{PET_CASES[0]}.nii.gz", (10.0, 10.0, 10.0), {1: 1500, 2: 10, 3: 200, 4: 150})
        _pet_label_map(pred / f"{PET_CASES[1]}.nii.gz", (10.0, 10.0, 10.0), {})
        return pred, 1.5

    monkeypatch.setattr(report, "_predict", fake_predict)
    out = report.check_pet_row(tmp_path, "P", tta=False)
    chk = pet_check.read_pet_check(out)
    assert chk[(PET_CASES[0], 1)] == (1500.0, True) and chk[(PET_CASES[0], 2)] == (10.0, False)
    assert chk[(PET_CASES[0], 3)] == (200.0, True) and chk[(PET_CASES[0], 4)] == (150.0, True)
    assert all(chk[(PET_CASES[1], o)] == (0.0, False) for o in (1, 2, 3, 4))
    assert json.loads((tmp_path / "scores/rP.json").read_text()) == {"predict_seconds": 1.5, "all_plausible": False,
                                                                     "all_placed": False}
    # filled in voxel order (30 x 30 slices from the lowest): liver z-centroid slice 0.4, x 14.5; right kidney
    # slice 1, x 4.5; spleen slice 1, x 15.0; left kidney slice 1.4, x 14.5 -> both kidneys lie above the organ
    # over them (misplaced), liver right of the spleen and right kidney right of the left one hold
    placed = pet_check.read_pet_check_placed(out)
    assert [placed[(PET_CASES[0], o)][2] for o in (1, 2, 3, 4)] == [True, False, True, False]
    assert [placed[(PET_CASES[1], o)][2] for o in (1, 2, 3, 4)] == [False] * 4   # nothing found
    md = pet_check.pet_markdown(out)
    assert "| 1500 | 10 (implausible) (misplaced) | 200 | 150 (misplaced) |" in md
    assert pet_check.read_pet_check(out) == chk   # (volume, plausible), as before the placement column

    def bad_labels(work, row, images, device, backend, threads, extra=()):
        pred = work / "pred" / f"r{row}"
        for case in PET_CASES:
            _pet_label_map(pred / f"{case}.nii.gz", (2.0, 2.0, 2.0), {1: 100, 13: 5})  # an MRI label leaked
        return pred, 1.0

    monkeypatch.setattr(report, "_predict", bad_labels)
    with pytest.raises(RuntimeError, match="outside the PET scheme"):
        report.check_pet_row(tmp_path, "P")


def test_pet_placement_by_hand_in_world_coordinates(tmp_path):
    """Four cubes where anatomy puts them (LPS: x to the patient's left, z to the head): all placed, whatever the
    voxel order; the right kidney moved above the liver (into the heart) or liver and spleen swapped are not."""
    import numpy as np
    import SimpleITK as sitk

    from training.pet_check import organ_centroids_mm, pet_placement

    def label_map(boxes, flip_x=False):
        arr = np.zeros((40, 20, 40), np.uint8)                 # z, y, x; 5 mm voxels
        for organ, (z0, x0) in boxes.items():
            arr[z0:z0 + 6, 8:14, x0:x0 + 6] = organ
        img = sitk.GetImageFromArray(arr[:, :, ::-1].copy() if flip_x else arr)
        img.SetSpacing((5.0, 5.0, 5.0))
        img.SetOrigin((-100.0, 0.0, -300.0))
        if flip_x:   # x voxel axis pointing to the patient's right: same anatomy, mirrored array
            img.SetDirection((-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
            img.SetOrigin((-100.0 + 39 * 5.0, 0.0, -300.0))
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.nii.gz"
        sitk.WriteImage(img, str(path))
        return path

    anatomy = {1: (24, 4), 3: (24, 30), 2: (10, 6), 4: (12, 28)}   # liver right-high, spleen left-high, kidneys below
    for flip in (False, True):
        c = organ_centroids_mm(label_map(anatomy, flip))
        assert c[1] == pytest.approx((-100 + 6.5 * 5, 10.5 * 5, -300 + 26.5 * 5))   # liver cube centre, in mm
        assert pet_placement(c) == {1: True, 2: True, 3: True, 4: True}
    heart = pet_placement(organ_centroids_mm(label_map({**anatomy, 2: (32, 16)})))
    assert heart == {1: True, 2: False, 3: True, 4: True}
    swapped = pet_placement(organ_centroids_mm(label_map({**anatomy, 1: (24, 30), 3: (24, 4)})))
    assert swapped[1] is False and swapped[3] is False
    no_spleen = pet_placement(organ_centroids_mm(label_map({k: v for k, v in anatomy.items() if k != 3})))
    assert no_spleen == {1: True, 2: True, 3: False, 4: True}   # absent: not placed; its rules not checked


@pytest.mark.skipif(not (REAL / "mr_chaos_t2").is_dir(), reason="needs ../shared/data/real")
def test_row1_end_to_end_on_real_data_tiny(tmp_path):
    """Render -> C2F convert/plan/train/export -> engine on the 4 test scans -> eval, with the smoke profile."""
    from training.uda_bench.__main__ import main

    work = tmp_path / "w"
    assert main(["run", "--work", str(work), "--profile", "smoke", "--rows", "1", "--device", "cpu", "--jobs", "2",
                 "--no-progress", "--data", str(REAL)]) == 0
    rendered = sorted(p.name for p in (work / "ct/images").glob("*_0000.nii.gz"))
    assert rendered == sorted([f"{c}_0000.nii.gz" for c in SOURCE_CASES] + ["ts_ct_dicom_0000.nii.gz",
                                                                            "ts_ct_sm_0000.nii.gz"])
    card = json.loads((work / "models/r1/model.json").read_text())
    assert card["name"] == "r1" and "onnx" in card["fine"]["files"]  # scoring on the CPU added ONNX
    rows = (work / "scores/r1.csv").read_text().splitlines()
    assert rows[0] == "case,organ,dsc,nsd" and len(rows) == 1 + 4 * len(TEST_CASES)
    assert main(["report", "--work", str(work), "--out", str(tmp_path / "rep"), "--rows", "1"]) == 0
    text = (tmp_path / "rep/results.md").read_text()
    assert "(1) C2F, source CT only" in text
    for f in ("boxplot.png", "overlays.png", "scores.csv", "summary.json"):
        assert (tmp_path / "rep" / f).stat().st_size > 0
    # resumed: nothing to do
    assert main(["run", "--work", str(work), "--profile", "smoke", "--rows", "1", "--device", "cpu",
                 "--no-progress", "--data", str(REAL)]) == 0
    assert main(["run", "--work", str(work), "--profile", "nope", "--rows", "1", "--data", str(REAL)]) == 2


def test_ship_copies_the_chosen_backends_and_records_the_benchmark_in_the_card(tmp_path):
    """`ship` on a work folder with a stub-network model: weights copied byte for byte (sha256 in the card), the
    row's test scores (MRI row) or PET check with positions (PET row) in the provenance, unscored rows refused."""
    import hashlib

    from helpers import stub_card_model
    from inference.model_folder import load_model_folder
    from training.uda_bench.report import ship

    work = tmp_path / "w"
    for row in ("2", "PR"):
        stub_card_model(work / "models" / f"r{row}", f"row {row} stub")
    (work / "inputs").mkdir(parents=True)
    (work / "inputs/profile.json").write_text(json.dumps({"name": "gpu_test"}))
    (work / "scores").mkdir()
    # MRI row: DSC 0.1 * organ index + 0.01 * case index, NSD half of it -> means known by hand
    lines = ["case,organ,dsc,nsd"]
    for i, case in enumerate(TEST_CASES):
        for k, organ in enumerate((1, 2, 3, 13)):
            d = 0.1 * (k + 1) + 0.01 * i
            lines.append(f"{case},{organ},{d:.4f},{d / 2:.4f}")
    (work / "scores/r2.csv").write_text("\n".join(lines) + "\n")
    out = ship(work, "2", tmp_path / "weights/m2", "m2", backends=("torch",), machine="test machine", note="hello")
    card = load_model_folder(out, verify=True).card
    bench = card.provenance["uda_benchmark"]
    assert card.name == "m2" and card.description.endswith(" hello") and bench["note"] == "hello"
    assert bench["row"] == "2" and bench["profile"] == "gpu_test" and bench["machine"] == "test machine"
    assert bench["test_dsc"]["liver"] == pytest.approx(0.115)          # (0.10 + 0.11 + 0.12 + 0.13) / 4
    assert bench["test_nsd"]["left kidney"] == pytest.approx(0.2075)   # (0.40 + ... + 0.43) / 4 / 2
    assert bench["mean_dsc"] == pytest.approx(0.265)
    for f in ("coarse.pt", "fine.pt"):
        src = (work / "models/r2" / f).read_bytes()
        assert (out / f).read_bytes() == src and card.sha256[f] == hashlib.sha256(src).hexdigest()
    assert not list(out.glob("*.onnx")) and not list(out.glob("*.part*"))
    # PET row: the plausibility CSV, with the placement column
    rows = ["case,label,organ,volume_ml,low_ml,high_ml,plausible,placed"]
    for case in PET_CASES:
        for organ, name, vol, placed in ((1, "liver", 1800.0, 1), (2, "right kidney", 150.0, 0),
                                         (3, "spleen", 200.0, 1), (4, "left kidney", 160.0, 1)):
            rows.append(f"{case},{organ},{name},{vol},1,5000,1,{placed}")
    (work / "scores/rPR_pet.csv").write_text("\n".join(rows) + "\n")
    bench = load_model_folder(ship(work, "PR", tmp_path / "weights/mp", "mp", backends=("torch",)),
                              verify=True).card.provenance["uda_benchmark"]
    assert bench["volumes_ml"][PET_CASES[0]]["liver"] == 1800.0 and bench["all_plausible"] is True
    assert bench["placed"][PET_CASES[1]]["right kidney"] is False and bench["all_placed"] is False
    assert bench["check"].endswith("(pet_placement)")
    # a CSV from before the placement column: volumes only, no placement claimed
    (work / "scores/rPR_pet.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    bench = load_model_folder(ship(work, "PR", tmp_path / "weights/mq", "mq", backends=("torch",)),
                              verify=True).card.provenance["uda_benchmark"]
    assert "placed" not in bench and bench["all_plausible"] is True
    stub_card_model(work / "models/r4", "row 4 stub")   # set-up outside the raises block: only ship may raise
    with pytest.raises(FileNotFoundError, match="not scored"):
        ship(work, "4", tmp_path / "weights/m4", "m4", backends=("torch",))


def test_report_table4_comes_from_the_cycles_filter_output(tmp_path):
    from dataclasses import asdict

    from training.selftrain.filtering import Table4Row
    from training.uda_bench.report import table4_section

    assert table4_section(tmp_path, scored=False) == ""        # the filter has not run
    folder = tmp_path / "rows/3/pseudo/chaos"
    folder.mkdir(parents=True)
    row = Table4Row(target_set="pet", total=4, class_number=1, relative_volume=0, top_k_dice=0, above_threshold=0,
                    dice_threshold=0.75, top_k=None)
    (folder / "table4.json").write_text(json.dumps(asdict(row)))
    text = table4_section(tmp_path, scored=False)
    assert "| pet | 4 | 1 | 0 | 0 |" in text and "Row (3) was not trained" in text
    kept = replace(row, relative_volume=1, top_k_dice=1, above_threshold=1)
    (folder / "table4.json").write_text(json.dumps(asdict(kept)))
    text = table4_section(tmp_path, scored=True)
    assert "| pet | 4 | 1 | 1 | 1 |" in text and "not trained" not in text


def test_builtin_profiles_are_small_overrides_of_gpu():
    """Every built-in profile resolves; the override files state only what differs from `gpu` (e.g. gpu_9min: the
    time budgets and the augmentation workers), and smoke has no time budget at all."""
    from training.uda_bench.protocol import PROFILE_DIR

    gpu = load_profile("gpu")
    for path in sorted(PROFILE_DIR.glob("*.json")):
        prof = load_profile(path.stem)
        assert prof.name == path.stem
        if path.stem != "gpu":
            assert json.loads(path.read_text())["extends"] == "gpu"
    nine = load_profile("gpu_9min")
    assert nine.spec == gpu.spec and nine.trainer == gpu.trainer
    assert (nine.coarse.time_budget_s, nine.fine.time_budget_s, nine.da_workers) == (130, 170, 3)
    smoke = load_profile("smoke")
    assert smoke.coarse.time_budget_s is None and smoke.fine.time_budget_s is None
    assert smoke.cyclegan["time_budget_s"] == 0.0   # the CycleGAN's own default: no budget
