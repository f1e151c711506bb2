"""One resume rule (training.resume): the recorded settings decide. Unchanged: resume or keep; changed: remove and
do again, saying so. Checked on the rule itself, on the two steps that used to return stale results (the
translator's translation, the PET renders: now made from the pack, each recording what it was made with), and
through the runner: only the changed step and its dependants run."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import sys

import numpy as np

from training.inplane.pack import load_packed, packed_set, read_meta
from training.inplane.packed import prepare_translator
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


def _small_pack(tmp_path: Path) -> Path:
    """Two labelled CT-like volumes (set btcv) and one target scan (chaos_target) on a 4 mm grid."""
    from training.inplane.data import prepare_volume
    from training.inplane.pack import write_pack

    rng = np.random.default_rng(0)
    vols = []
    for name in ("ct1", "ct2", "mr1"):
        arr = rng.normal(100, 20, (4, 24, 24)).astype(np.float32)
        lab = np.zeros((4, 24, 24), np.uint8)
        lab[1:3, 6:14, 6:14], lab[1:3, 15:20, 4:9] = 1, 3
        vols.append(prepare_volume(name, arr, (5.0, 4.0, 4.0), lab, (None, 4.0, 4.0), (0, 1, 2, 3, 13)))
    return write_pack(tmp_path / "pack.npz", vols, {"btcv": ["ct1", "ct2"], "chaos_target": ["mr1"]},
                      compress=False)


def _profile_with_translator(tmp_path, **changes):
    base = json.loads((PROFILE_DIR / "cyclegan" / "cpu.json").read_text())
    base.update(changes)
    path = tmp_path / f"cyclegan_{len(changes)}.json"
    path.write_text(json.dumps(base))
    return replace(load_profile("cpu"), cyclegan=str(path))


def test_a_translation_of_other_options_is_made_again(tmp_path, monkeypatch):
    """The translated CT records the translator's options: the same options hand it back, other options train
    the translator again from scratch and translate again (it used to hand back the old translation)."""
    import training.cyclegan.train as cg_train
    import training.cyclegan.translate as cg_translate

    calls: list[str] = []

    def train_cases(ct, target, run, opts, device="cpu", progress=True):
        calls.append(f"train {len(ct)} {len(target)}")
        (Path(run) / "checkpoints").mkdir(parents=True, exist_ok=True)
        opts.save(Path(run) / "options.json")
        (Path(run) / "quality.json").write_text("{}")

    monkeypatch.setattr(cg_train, "train_cases", train_cases)
    monkeypatch.setattr(cg_translate, "load_checkpoint", lambda path, device="cpu": (None, {}))
    monkeypatch.setattr(cg_translate, "translate_case", lambda model, ckpt, case: calls.append("translate")
                        or case.image * 0 + float(len(calls)))
    pack, work = _small_pack(tmp_path), tmp_path / "work"
    prof = _profile_with_translator(tmp_path)
    out = prepare_translator(work, prof, "attention", pack)
    assert calls == ["train 2 1", "translate", "translate"] and packed_set(out, "all") == ["ct1", "ct2"]
    (work / "cyclegan" / "attention" / "stale.txt").write_text("x")
    calls.clear()
    assert prepare_translator(work, prof, "attention", pack) == out and calls == []       # the same options
    seed = json.loads((PROFILE_DIR / "cyclegan" / "cpu.json").read_text()).get("seed", 0)
    prepare_translator(work, _profile_with_translator(tmp_path, seed=seed + 1), "attention", pack)
    assert calls == ["train 2 1", "translate", "translate"]                               # made again
    assert not (work / "cyclegan" / "attention" / "stale.txt").exists()                   # from scratch
    assert read_meta(out)["options"]["seed"] == seed + 1


def test_a_changed_translator_reruns_only_its_dependants(tmp_path):
    """Through the runner: a changed translator option re-runs the translator step and the rows trained on its
    images; the shared coarse stage and the rows before it do not move (steps recorded, commands stubbed)."""
    from training.inplane import steps

    log = tmp_path / "ran.txt"

    def graph(prof):
        out = steps.row_steps(tmp_path / "work", prof, "cpu", ["2", "A"], tmp_path / "p.npz", score=False)
        for st in out:   # each command only says that it ran
            st.argv = [sys.executable, "-c", f"open({str(log)!r}, 'a').write({st.name!r} + chr(10))"]
        return out

    prof = _profile_with_translator(tmp_path)
    assert run_steps(tmp_path / "work", graph(prof), progress=False).ok
    assert sorted(log.read_text().split()) == ["coarse", "cyclegan.attention", "r2.fine", "rA.fine"]
    log.write_text("")
    assert run_steps(tmp_path / "work", graph(prof), progress=False).done == [] and log.read_text() == ""
    seed = json.loads((PROFILE_DIR / "cyclegan" / "cpu.json").read_text()).get("seed", 0)
    res = run_steps(tmp_path / "work", graph(_profile_with_translator(tmp_path, seed=seed + 1)), progress=False)
    assert sorted(res.done) == ["cyclegan.attention", "r2.fine"] and sorted(res.skipped) == ["coarse", "rA.fine"]


def fake_render(name, labels, body, spacing, seed):
    """packed._render's stand-in (a process pool's task, so a module-level function): the seed as the image."""
    from training.inplane.data import prepare_volume

    return prepare_volume(name, np.full(labels.shape, float(seed), np.float32), spacing, labels, spacing,
                          (0, 1, 2, 3, 13))


def test_pet_renders_of_another_seed_are_rendered_again(tmp_path, monkeypatch):
    from training.inplane import packed

    monkeypatch.setattr(packed, "_render", fake_render)
    pack, work = _small_pack(tmp_path), tmp_path / "work"
    prof = replace(load_profile("cpu"), seed=0)
    out = packed.prepare_render(work, prof, "P", pack, workers=1)
    names = packed_set(out, "all")
    assert names == [f"ct{i}_pet{k}" for i in (1, 2) for k in range(prof.rows["P"].render_variants)]
    first = out.stat().st_mtime_ns
    assert packed.prepare_render(work, prof, "P", pack, workers=1) == out and out.stat().st_mtime_ns == first
    packed.prepare_render(work, replace(prof, seed=1), "P", pack, workers=1)   # another seed: rendered again
    assert read_meta(out)["settings"]["seed"] == 1 and {v.window for v in load_packed(out, (None, 4.0, 4.0), names)
                                                         } == {(1.0, 1.0 + 1e-6)}
