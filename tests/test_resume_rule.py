"""One resume rule (training.resume): the recorded settings decide. Unchanged: resume or keep; changed: remove and
do again, saying so. Checked on the rule itself and on the two steps that used to return stale results (the
translator's translation, the PET renders), through the runner: only the changed step and its dependants run."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from training.inplane import steps, synthetic, train
from training.inplane.recipe import PROFILE_DIR, load_profile
from training.resume import SETTINGS_FILE, claim
from training.runner import run_steps


def test_claim_keeps_same_settings_and_restarts_other_settings_saying_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert claim(out, {"lr": 1, "n": (2, 3)}, "done.txt")          # new: work to do
    (out / "partial.bin").write_text("x")
    assert claim(out, {"lr": 1, "n": [2, 3]}, "done.txt")          # same (tuple == list): resumes, keeps files
    assert (out / "partial.bin").is_file()
    (out / "done.txt").write_text("ok")
    assert not claim(out, {"lr": 1, "n": [2, 3]}, "done.txt")      # finished
    assert claim(out, {"lr": 2, "n": [2, 3]}, "done.txt")          # changed: from scratch
    assert not (out / "partial.bin").exists() and not (out / "done.txt").exists()
    assert "other settings (lr)" in capsys.readouterr().err
    assert json.loads((out / SETTINGS_FILE).read_text()) == {"lr": 2, "n": [2, 3]}
    old = tmp_path / "old"
    (old).mkdir()
    (old / "done.txt").write_text("ok")                            # from before settings were recorded: adopted
    assert not claim(old, {"lr": 1}, "done.txt")


def _stub_translator(monkeypatch, calls):
    import training.cyclegan.train as cg_train
    import training.cyclegan.translate as cg_translate

    def train(ct_images, ct_labels, target, run, opts, device="cpu", progress=True):
        calls.append("train")
        (Path(run) / "checkpoints").mkdir(parents=True, exist_ok=True)
        (Path(run) / "quality.json").write_text("{}")

    def translate(ckpt, images, labels, synth, device="cpu", progress=True):
        calls.append("translate")
        Path(synth).mkdir(parents=True, exist_ok=True)
        (Path(synth) / "translate.json").write_text("{}")

    monkeypatch.setattr(cg_train, "train", train)
    monkeypatch.setattr(cg_translate, "translate", translate)
    monkeypatch.setattr(synthetic, "target_folder", lambda work, data: Path(work) / "target")


def _profile_with_translator(tmp_path, **changes):
    base = json.loads((PROFILE_DIR / "cyclegan" / "cpu.json").read_text())
    base.update(changes)
    path = tmp_path / f"cyclegan_{len(changes)}.json"
    path.write_text(json.dumps(base))
    return replace(load_profile("cpu"), cyclegan=str(path))


def test_a_translation_of_other_options_is_made_again_and_only_its_dependants_rerun(tmp_path, monkeypatch):
    calls: list[str] = []
    _stub_translator(monkeypatch, calls)
    trained: list[str] = []
    monkeypatch.setattr(train, "train_one", lambda work, prof, row, stage, *a: trained.append(f"{row}.{stage}")
                        or str(work))
    monkeypatch.setattr(steps, "_export", lambda work, prof, row: str(work))
    monkeypatch.setattr(steps, "_score", lambda work, prof, row, data, threads: str(work))
    work = tmp_path / "work"
    prof = _profile_with_translator(tmp_path)
    first = run_steps(work, steps.row_steps(work, prof, "2", tmp_path), progress=False)
    assert first.ok and calls == ["train", "translate"] and trained == ["2.coarse", "2.fine"]
    calls.clear()
    trained.clear()
    again = run_steps(work, steps.row_steps(work, prof, "2", tmp_path), progress=False)
    assert again.done == [] and calls == [] and trained == []
    # another translator option: the translator trains and translates again (it used to hand back the old
    # translation), then the fine stage, export and score below it; the coarse stage does not move
    seed = json.loads((PROFILE_DIR / "cyclegan" / "cpu.json").read_text()).get("seed", 0)
    changed = _profile_with_translator(tmp_path, seed=seed + 1)
    third = run_steps(work, steps.row_steps(work, changed, "2", tmp_path), progress=False)
    assert calls == ["train", "translate"] and trained == ["2.fine"]
    assert sorted(third.done) == ["cyclegan.attention", "r2.export", "r2.fine", "r2.score"]
    assert "coarse" in third.skipped


def test_pet_renders_of_another_seed_are_rendered_again(tmp_path, monkeypatch):
    import training.render as render
    from training.inplane.pet import pet_cases

    made: list[str] = []

    def render_pet_folder(labels_dir, body_dir, names, out, seed, variants, config, workers=1):
        for n in names:   # as the real one: renders already written are kept
            for k in range(variants):
                image = Path(out) / "images" / f"{n}_pet{k}_0000.nii.gz"
                if not image.exists():
                    image.parent.mkdir(parents=True, exist_ok=True)
                    image.write_text(str(seed))
                    made.append(image.name)

    monkeypatch.setattr(render, "render_pet_folder", render_pet_folder)
    monkeypatch.setattr(render, "write_body_mask", lambda image, label, out: Path(out).write_text("body"))
    work, data = tmp_path / "work", tmp_path / "data"
    pet_cases(work, data, variants=1, seed=0)
    assert len(made) == 30
    made.clear()
    pet_cases(work, data, variants=1, seed=0)
    assert made == []                                   # the same settings: kept
    cases = pet_cases(work, data, variants=1, seed=1)   # another seed: every render made again with it
    assert len(made) == 30 and {c.image.read_text() for c in cases} == {"1"}
