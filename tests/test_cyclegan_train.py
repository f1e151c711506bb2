"""End to end on synthetic phantoms: train command, checkpoints, resume, quality.json, grids, plain ablation."""
import json

import pytest
import torch

from training.cyclegan.__main__ import main
from phantoms import write_case
from training.cyclegan.translate import load_checkpoint

torch.set_num_threads(1)

TINY = ["--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--n-layers-d", "2", "--seg-filters", "4", "--seg-depth", "2",
        "--slice-size", "32", "--spacing-mm", "3", "--num-workers", "0", "--iterations-per-epoch", "2",
        "--val-fraction", "0.5", "--grid-slices", "2", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for i in range(2):
        write_case(root / "ct_img", root / "ct_lab", f"ct{i}", (4, 36, 40), "ct", spacing=(2.0, 2.0, 5.0), seed=i)
        write_case(root / "mr_img", root / "mr_lab", f"mr{i}", (3, 30, 30), "mri", spacing=(2.5, 2.5, 6.0),
                   direction=(1, 0, 0, 0, -1, 0, 0, 0, 1), seed=10 + i)
    return root


def run(data, out, *extra):
    return main(["train", "--ct-images", str(data / "ct_img"), "--ct-labels", str(data / "ct_lab"),
                 "--target-images", str(data / "mr_img"), "--out", str(out), *TINY, *extra])


def log_lines(out):
    return [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]


def test_train_writes_checkpoints_quality_and_grids_and_resumes(data, tmp_path):
    out = tmp_path / "run"
    assert run(data, out, "--epochs", "2", "--save-every", "1", "--target-labels", str(data / "mr_lab")) == 0
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"latest.pt", "epoch_1.pt", "epoch_2.pt"}
    steps = log_lines(out)
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and {"G", "D_A", "D_A_local", "seg_G", "S"} <= set(steps[0])
    q = json.loads((out / "quality.json").read_text())
    assert q["held_out"] is True and len(q["ct_cases"]) == 1 and q["attention"] is True
    for key in ("segmentation_dice", "structure_preservation", "target_dice"):
        assert 0.0 <= q[key]["mean"] <= 1.0
        assert set(q[key]["per_organ"]) == {"liver", "right_kidney", "spleen", "left_kidney"}
    assert q["cycle_mae_hu"]["mean"] > 0
    assert q["target_dice"]["per_organ"]["liver"]["cases"] == 2
    grids = list((out / "grids").glob("*.png"))
    assert [g.name for g in grids] == [q["ct_cases"][0] + ".png"] and grids[0].stat().st_size > 1000
    model, ckpt = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4 and model.opts.epochs == 2
    assert ckpt["target_window"][0] < ckpt["target_window"][1]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    # resume: one more epoch continues the step count from the checkpoint
    assert run(data, out, "--epochs", "3", "--save-every", "1") == 0
    assert [s["step"] for s in log_lines(out)] == [1, 2, 3, 4, 5, 6]
    assert log_lines(out)[-1]["epoch"] == 3
    model3, ckpt3 = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt3["epoch"] == 3
    assert any(not torch.equal(before[k], v) for k, v in model3.state_dict().items())
    assert "training" in ckpt3 and "training" not in torch.load(out / "checkpoints" / "epoch_3.pt",
                                                                 weights_only=False)
    # an interrupted epoch's log lines are dropped on resume (the epoch is redone from the checkpoint)
    with open(out / "loss_log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 4, "step": 7, "G": 1.0}) + "\n")
    # nothing left to do: no new steps, quality rewritten
    assert run(data, out, "--epochs", "3") == 0
    assert len(log_lines(out)) == 6
    # a different model in the same folder trains again from scratch (training.resume's rule), saying so
    assert run(data, out, "--epochs", "1", "--ngf", "8") == 0
    assert [s["step"] for s in log_lines(out)] == [1, 2]
    model8, ckpt8 = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt8["epoch"] == 1 and model8.opts.ngf == 8
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"latest.pt", "epoch_1.pt"}


def test_plain_ablation(data, tmp_path):
    out = tmp_path / "plain"
    assert run(data, out, "--epochs", "1", "--plain") == 0
    steps = log_lines(out)
    assert "D_A_local" not in steps[0] and "seg_G" not in steps[0] and "S" in steps[0]
    q = json.loads((out / "quality.json").read_text())
    assert q["attention"] is False and q["segmentation_dice"]["mean"] is not None     # S as a detached probe
    model, _ = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert model.D_A_local is None

    out2 = tmp_path / "plain_noprobe"
    assert run(data, out2, "--epochs", "1", "--plain", "--no-probe-segmenter") == 0
    q2 = json.loads((out2 / "quality.json").read_text())
    assert q2["segmentation_dice"] is None and q2["cycle_mae_hu"]["mean"] > 0


def test_options_file_and_cli_override(data, tmp_path):
    opts_file = tmp_path / "opts.json"
    opts_file.write_text(json.dumps({"ngf": 4, "epochs": 1, "lambda_seg": 2.5, "percentiles": [1, 99]}))
    out = tmp_path / "run"
    assert run(data, out, "--options", str(opts_file), "--lambda-local", "0.25") == 0
    saved = json.loads((out / "options.json").read_text())
    assert saved["lambda_seg"] == 2.5 and saved["lambda_local"] == 0.25 and saved["percentiles"] == [1, 99]
    assert saved["slice_size"] == 32                          # command line beats defaults
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ngff": 4}))
    assert run(data, tmp_path / "bad_run", "--options", str(bad)) == 2


def test_missing_label_is_a_clear_error(data, tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "lonely_0000.nii.gz").symlink_to(data / "ct_img" / "ct0_0000.nii.gz")
    assert main(["train", "--ct-images", str(tmp_path / "img"), "--ct-labels", str(data / "ct_lab"),
                 "--target-images", str(data / "mr_img"), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "lonely_0000.nii.gz" in capsys.readouterr().err
