"""One benchmark row as a step graph on the shared runner (training.runner): the row's stages, the rows it learns
from (teachers, the start row), its translator or renders, export and score, each a step whose "done" marker
records what it was made from. A changed profile setting re-runs the steps it touches and everything below them.

Steps (names as in WORK/state/):
    coarse | r<row>.coarse       the shared coarse stage, or the row's own (PET rows)
    r<row>.sources, .convert, .plan, .coarse, .fine, .export
                                 a 3D nnU-Net row (trainer "nnunet3d"): training.c2f's chain (nnunet3d.py)
    cyclegan.<kind>              the row's translator and the translated source (CycleGAN rows)
    r<row>.pseudo                pseudo-labels of the target scans through the dual-stage filter (self-training)
    r<row>.fine                  the row's fine stage
    r<row>.export, r<row>.score  WORK/models/r<row>; the CHAOS test scores or the PET check

Training steps resume an interrupted run (stage folders carry their settings, train._still_to_train); the other
steps are redone whole when they run (minutes at most).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from training.runner import Step

from . import protocol
from .recipe import Profile


def row_steps(work: Path, prof: Profile, row: str, data: Path = protocol.REAL_DATA,
              device: str = "cpu", threads: int | None = None, curve_on_test: bool = True) -> list[Step]:
    """The steps of `row` and of every row it needs (its teachers, its start row), in dependency order."""
    from .train import train_one

    steps: dict[str, Step] = {}

    def train(rw: str, stage: str):
        return lambda: str(train_one(work, prof, rw, stage, data, device, threads, curve_on_test))

    def add(rw: str) -> None:
        if f"r{rw}.score" in steps:
            return
        r = prof.rows[rw]
        deps: list[str] = []
        coarse = f"r{rw}.coarse" if r.own_coarse else "coarse"
        if coarse not in steps and r.trainer == "inplane":
            steps[coarse] = Step(coarse, func=train(rw, "coarse"), settings=prof.stage_settings(rw, "coarse"))
        if r.synthetic:
            from .synthetic import synthetic_folder, translator_options

            name = f"cyclegan.{r.synthetic}"
            steps.setdefault(name, Step(name, func=lambda k=r.synthetic: str(synthetic_folder(
                work, prof, k, data, device, threads)), settings=translator_options(prof, r.synthetic).to_dict()))
            deps.append(name)
        if r.selftrain is not None:
            from .pseudo import pseudo_label

            st = r.selftrain
            for t in st.teachers:
                add(t)
            name = f"r{rw}.pseudo"
            steps[name] = Step(name, tuple(f"r{t}.export" for t in st.teachers),
                               func=lambda: str(pseudo_label(work, prof, rw, data, device, threads, fresh=True)),
                               settings={"selftrain": asdict(st)})
            deps.append(name)
        if r.start:
            if prof.rows[r.start].trainer != "inplane":
                raise ValueError(f"row {rw} starts from row {r.start}'s fine stage, which is a 3D nnU-Net one")
            add(r.start)
            deps.append(f"r{r.start}.fine")
        if r.trainer == "nnunet3d":
            from .nnunet3d import nnunet_steps

            chain = nnunet_steps(work, prof, rw, tuple(deps), data, device, threads)
            score = _export_and_score(work, prof, rw, (), data, threads)[1]
            steps.update({step.name: step for step in (*chain, score)})
            return
        steps[f"r{rw}.fine"] = Step(f"r{rw}.fine", tuple(deps), func=train(rw, "fine"),
                                    settings=prof.stage_settings(rw, "fine"))
        for step in _export_and_score(work, prof, rw, (coarse, f"r{rw}.fine"), data, threads):
            steps[step.name] = step

    add(row)
    return list(steps.values())


def _export_and_score(work: Path, prof: Profile, row: str, deps: tuple[str, ...], data: Path,
                      threads: int | None) -> tuple[Step, Step]:
    """Row `row`'s export step (after `deps`) and its score step."""
    modality = prof.rows[row].modality
    return (Step(f"r{row}.export", deps, func=lambda: _export(work, prof, row), settings={"modality": modality}),
            Step(f"r{row}.score", (f"r{row}.export",), func=lambda: _score(work, prof, row, data, threads),
                 settings={"modality": modality, "data": str(data)}))


def _export(work: Path, profile: Profile, row: str) -> str:
    from .layout import machine
    from .export import export_row

    return str(export_row(work, profile, row, work / "models" / f"r{row}", name=f"r{row}", machine=machine()))


def _score(work: Path, profile: Profile, row: str, data: Path, threads: int | None) -> str:
    from .layout import score_file
    from .report import score_model

    return str(score_model(work / "models" / f"r{row}", score_file(work, profile, row).parent, data, threads))


def trained_steps(work: Path, prof: Profile, rows: list[str], data: Path = protocol.REAL_DATA,
                  threads: int | None = None) -> list[Step]:
    """Export and score the rows of `rows` whose stages are trained (e.g. on a GPU machine, from a pack), without
    training anything: one export and one score step per such row."""
    from .layout import stage_dirs

    return [step for rw in rows
            if all((d / "final.pt").is_file() for d in stage_dirs(work, rw, prof.rows[rw].own_coarse).values())
            for step in _export_and_score(work, prof, rw, (), data, threads)]
