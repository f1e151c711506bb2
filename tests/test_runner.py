"""The step runner (training/runner.py) and the C2F chain on it (training/c2f/chain.py): dependency order,
resume, re-runs when what a step was made from changes, output checks; the chain's command lines and the rule that
decides when a training resumes."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from training.c2f.chain import C2FChain, StageTraining, chain_steps
from training.c2f.cli import folders_of
from training.c2f.train import ARGS_FILE, TrainArgs, output_folder, resumable
from training.runner import Step, is_done, run_steps


def _cmd(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_runner_runs_in_dependency_order_blocks_dependants_and_resumes(tmp_path):
    out = tmp_path / "order.txt"
    log = f"open({str(out)!r}, 'a').write('{{}}\\n')"
    steps = [
        Step("a", (), _cmd(log.format("a"))),
        Step("b", ("a",), _cmd(log.format("b"))),
        Step("bad", ("a",), _cmd("import sys; print('boom'); sys.exit(3)")),
        Step("after_bad", ("bad",), _cmd(log.format("after_bad"))),
        Step("c", ("b",), func=lambda: {"value": 42}),
    ]
    res = run_steps(tmp_path, steps, jobs=2, progress=False)
    assert not res.ok
    assert set(res.done) == {"a", "b", "c"} and list(res.failed) == ["bad"] and res.blocked == ["after_bad"]
    assert "exit code 3" in res.failed["bad"] and "boom" in res.failed["bad"]
    lines = out.read_text().split()
    assert lines.index("a") < lines.index("b") and "after_bad" not in lines
    assert json.loads((tmp_path / "state/c.json").read_text())["info"] == {"value": 42}
    # resume: finished steps are skipped, the failed one is retried (now fixed), its dependant runs
    steps[2] = Step("bad", ("a",), _cmd("print('fixed')"))
    res2 = run_steps(tmp_path, steps, jobs=1, progress=False)
    assert res2.ok and set(res2.skipped) == {"a", "b", "c"} and set(res2.done) == {"bad", "after_bad"}
    assert out.read_text().split().count("a") == 1
    # a changed command is not "done"
    assert not is_done(tmp_path, Step("a", (), _cmd("print('other')")))
    with pytest.raises(ValueError, match="unknown steps"):
        run_steps(tmp_path, [Step("x", ("missing",), _cmd("pass"))], progress=False)


def test_a_changed_upstream_step_or_setting_reruns_its_dependants(tmp_path):
    """A "done" marker records what the step was made from: its command / settings and a digest of each
    dependency's marker. Changing step a re-runs a and everything below it; changing c's settings re-runs c only."""
    out = tmp_path / "order.txt"
    log = f"open({str(out)!r}, 'a').write('{{}}\\n')"
    calls = []

    def steps(a_text: str, seed: int) -> list[Step]:
        return [Step("a", (), _cmd(log.format(a_text))), Step("b", ("a",), _cmd(log.format("b"))),
                Step("c", ("b",), func=lambda: calls.append(seed) or {"seed": seed}, settings={"seed": seed}),
                Step("d", (), _cmd(log.format("d")))]

    assert run_steps(tmp_path, steps("a", 0), progress=False).ok
    res = run_steps(tmp_path, steps("a", 0), progress=False)
    assert set(res.skipped) == {"a", "b", "c", "d"} and not res.done
    res = run_steps(tmp_path, steps("a", 1), progress=False)
    assert res.done == ["c"] and calls == [0, 1]
    res = run_steps(tmp_path, steps("a2", 1), progress=False)          # upstream command changed
    assert set(res.done) == {"a", "b", "c"} and res.skipped == ["d"]
    assert out.read_text().split() == ["a", "b", "d", "a2", "b"]


def test_a_step_whose_outputs_are_gone_runs_again(tmp_path):
    made = tmp_path / "made.txt"
    calls = []

    def make() -> dict:
        calls.append(1)
        made.write_text("x")
        return {"file": str(made)}

    step = Step("m", (), func=make, settings={"v": 1}, verify=lambda info: Path(info["file"]).is_file())
    assert run_steps(tmp_path, [step], progress=False).done == ["m"]
    assert run_steps(tmp_path, [step], progress=False).skipped == ["m"]
    made.unlink()
    assert not is_done(tmp_path, step)
    assert run_steps(tmp_path, [step], progress=False).done == ["m"] and len(calls) == 2


def test_chain_command_lines(tmp_path):
    chain = C2FChain(work=tmp_path / "w", sources=("ct=/i,/l",), optional_sources=("mr=/p,/q",),
                     out=tmp_path / "m", name="m", description="d", dataset_id=601, lr=1e-6, device="cpu",
                     threads=1, da_workers=0, fine=StageTraining(epochs=3, pretrained="/best/fine.pt"),
                     modalities=("MRI",), onnx=False, provenance=tmp_path / "p.json", settings_from=tmp_path / "b")
    cmds = chain.commands()
    assert list(cmds) == ["convert", "plan", "coarse", "fine", "export"]
    assert cmds["convert"][cmds["convert"].index("--source") + 1] == "ct=/i,/l"
    assert cmds["convert"][cmds["convert"].index("--optional-source") + 1] == "mr=/p,/q"
    assert all(c[c.index("--dataset-id") + 1] == "601" for c in cmds.values())
    fine, coarse = cmds["fine"], cmds["coarse"]
    assert fine[fine.index("--pretrained") + 1] == "/best/fine.pt" and "--pretrained" not in coarse
    assert fine[fine.index("--epochs") + 1] == "3" and "--epochs" not in coarse
    assert all("--resume" in c and c[c.index("--threads") + 1] == "1" for c in (coarse, fine))
    assert {"--no-onnx", "--provenance", "--settings-from"} <= set(cmds["export"])
    assert "--dataset-id" not in C2FChain(work=tmp_path, sources=(), out=tmp_path, name="m").commands()["plan"]
    steps = {s.name: s for s in chain_steps("r1.", chain, deps=("data",), export_deps=("prov",))}
    assert steps["r1.convert"].deps == ("data",) and steps["r1.export"].deps == ("r1.coarse", "r1.fine", "prov")
    assert steps["r1.fine"].argv[1:4] == ["-m", "training.c2f", "train"] and steps["r1.fine"].gpu
    inproc = {s.name: s for s in chain_steps("", chain, in_process=True)}
    assert inproc["fine"].argv is None and inproc["fine"].settings == {"command": ["training.c2f", *fine]}


def test_a_training_resumes_only_its_own_interrupted_run(tmp_path):
    """resumable(): a checkpoint of the same training arguments, newer than the current plans."""
    folders = folders_of(tmp_path)
    args = TrainArgs(folders=folders, dataset="Dataset501_FLAREc2fCoarse", epochs=2, initial_lr=1e-6)
    plans = Path(folders.preprocessed) / args.dataset / "C2FPlans.json"
    plans.parent.mkdir(parents=True)
    plans.write_text("{}")
    fold = output_folder(folders, args.dataset)
    fold.mkdir(parents=True)
    assert not resumable(args)                                  # no checkpoint
    ckpt = fold / "checkpoint_latest.pth"
    ckpt.write_bytes(b"x")
    assert not resumable(args)                                  # no record of what it was
    record = {"dataset": args.dataset, "trainer": args.trainer, "fold": "all", "epochs": 2,
              "iterations_per_epoch": None, "val_iterations_per_epoch": None, "initial_lr": 1e-6,
              "time_budget_s": None, "continue_training": False, "pretrained": "/best/coarse.pt"}
    (fold / ARGS_FILE).write_text(json.dumps(record))
    os.utime(plans, (1_000, 1_000))
    assert resumable(args)
    assert not resumable(TrainArgs(folders=folders, dataset=args.dataset, epochs=3, initial_lr=1e-6))
    os.utime(plans, (ckpt.stat().st_mtime + 10,) * 2)            # re-planned after the checkpoint: start over
    assert not resumable(args)


def test_convert_skips_an_optional_source_without_cases(tmp_path, capsys):
    from training.c2f.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no source holds a labelled case"):
        main(["convert", "--work", str(tmp_path / "w"), "--optional-source", f"mr={tmp_path / 'empty'}"])
    assert "skipped: source mr: no <case>_0000.nii.gz" in capsys.readouterr().out


def test_export_refuses_an_unreadable_provenance_file_before_writing(tmp_path):
    from training.c2f.cli import main

    bad = tmp_path / "p.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="a JSON object is needed"):
        main(["export", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "m"), "--provenance", str(bad)])
    with pytest.raises(SystemExit, match="not a readable JSON file"):
        main(["export", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "m"),
              "--provenance", str(tmp_path / "missing.json")])
    assert not (tmp_path / "m").exists()
