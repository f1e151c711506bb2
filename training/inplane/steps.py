"""The benchmark's one step graph (on the shared runner, training.runner): every row's stages, the rows it learns
from (teachers, the start row), its translator, renders or pseudo-labels, export and score, all on the one data
path (the pack, packed.py). Each step records what it was made from; a changed profile setting re-runs the steps
it touches and everything below them.

Steps (names as in WORK/state/):
    pack                         WORK/pack.npz made from the real data (`run`); a given pack instead (`run-packed`)
    coarse | r<row>.coarse       the shared coarse stage, or the row's own (PET rows)
    cyclegan.<kind>              the row's translator and the translated source (CycleGAN rows)
    r<row>.render                the PET row's renders of the BTCV label maps
    r<row>.pseudo                pseudo-labels of the target scans through the dual-stage filter (self-training)
    r<row>.fine                  the row's fine stage (an average row's: the mean of its rows', average.py)
    r<row>.sources, .convert, .plan, .coarse, .fine, .export
                                 a 3D nnU-Net row (trainer "nnunet3d"): training.c2f's chain (nnunet3d.py)
    r<row>.export, r<row>.score  WORK/models/r<row>; the CHAOS test scores or the PET check (`run`)

Every step that trains or prepares is a process of this package (`jobs` of them at once; several share a GPU);
training steps resume an interrupted run (stage folders carry their settings, train._still_to_train).
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from training.runner import RunResult, Step, run_steps

from . import protocol
from .layout import work_pack
from .recipe import Profile, as_profile


def row_steps(work: Path, prof: Profile, profile_arg: str, rows: list[str], pack: Path | None = None,
              data: Path = protocol.REAL_DATA, device: str = "cpu", threads: int | None = None,
              curve_on_test: bool = True, score: bool = True) -> list[Step]:
    """The steps of `rows` and of every row they learn from, in dependency order. `pack` None: WORK/pack.npz,
    made from `data` by the step `pack`. `score`: also export and score each row (the engine on the real scans
    under `data`). `profile_arg` is the profile as the steps' commands name it (a name or a JSON path)."""
    graph = _Graph(work, prof, profile_arg, pack, data, device, threads, curve_on_test, score)
    for row in rows:
        graph.add(row)
    return list(graph.steps.values())


class _Graph:
    """The steps of row_steps as they are added, each row after what it needs."""

    def __init__(self, work, prof, profile_arg, pack, data, device, threads, curve_on_test, score):
        from .pack import contents, pack as make_pack

        self.work, self.prof, self.data, self.device, self.threads = work, prof, data, device, threads
        self.curve_on_test, self.score = curve_on_test, score
        self.steps: dict[str, Step] = {}
        self.first: tuple[str, ...] = ()
        if pack is None:
            pack = work_pack(work)
            self.steps["pack"] = Step("pack", func=lambda: str(make_pack(pack, prof, data, compress=False)),
                                      settings={"data": str(data), **contents(prof)})
            self.first = ("pack",)
        self.pack = pack
        self.common = ["--work", str(work), "--profile", profile_arg, "--packed", str(pack), "--device", device]
        self.common += ["--threads", str(threads)] if threads else []

    def cmd(self, verb: str, row: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "training.inplane", verb, *self.common, "--row", row, *extra]

    def coarse_of(self, rw: str) -> str:
        return f"r{rw}.coarse" if self.prof.rows[rw].own_coarse else "coarse"

    def train(self, row: str, stage: str, deps: tuple[str, ...]) -> Step:
        name = self.coarse_of(row) if stage == "coarse" else f"r{row}.{stage}"
        extra = ("--stage", stage) + (() if self.curve_on_test else ("--no-curve-on-test",))
        return Step(name, self.first + deps, argv=self.cmd("train", row, *extra), gpu=True,
                    settings=self.prof.stage_settings(row, stage))

    def prepare(self, rw: str, name: str, part: str, deps: tuple[str, ...], settings: dict) -> str:
        self.steps.setdefault(name, Step(name, self.first + deps, argv=self.cmd("prepare", rw, "--part", part),
                                         gpu=part != "render", settings=settings))
        return name

    def inputs(self, rw: str) -> list[str]:
        """The steps that make what row `rw`'s fine stage trains on besides the pack (adding them)."""
        from .packed import render_settings, translator_options

        r, deps = self.prof.rows[rw], []
        if r.source == "btcv_pet":
            deps.append(self.prepare(rw, f"r{rw}.render", "render", (), render_settings(self.prof, rw)))
        if r.trainer == "inplane" and self.coarse_of(rw) not in self.steps:
            owner = rw if r.own_coarse else self.prof.coarse_row
            self.steps[self.coarse_of(rw)] = self.train(owner, "coarse", tuple(deps))
        if r.synthetic:
            deps.append(self.prepare(rw, f"cyclegan.{r.synthetic}", "translator", (),
                                     translator_options(self.prof, r.synthetic).to_dict()))
        if r.selftrain:
            for t in r.selftrain.teachers:
                self.add(t)
            teach = tuple(dict.fromkeys(d for t in r.selftrain.teachers for d in (f"r{t}.fine", self.coarse_of(t))))
            deps.append(self.prepare(rw, f"r{rw}.pseudo", "pseudo", teach, {"selftrain": asdict(r.selftrain)}))
        for m in ((r.start,) if r.start else ()) + r.average:   # the rows whose fine weights it starts from or
            self.add(m)                                          # averages
            deps.append(f"r{m}.fine")
        return deps

    def add(self, rw: str) -> None:
        if f"r{rw}.export" in self.steps or f"r{rw}.fine" in self.steps:
            return
        self.prof.row(rw)   # an unknown row is named here
        deps = tuple(self.inputs(rw))
        export, score = _export_and_score(self.work, self.prof, rw, (self.coarse_of(rw), f"r{rw}.fine"), self.data,
                                          self.threads)
        if self.prof.rows[rw].trainer == "nnunet3d":   # training.c2f's chain, which ends in its own export step
            from .nnunet3d import nnunet_steps

            chain = nnunet_steps(self.work, self.prof, rw, self.first + deps, self.pack, self.device, self.threads)
            self.steps.update({step.name: step for step in chain})
        else:
            self.steps[f"r{rw}.fine"] = self.train(rw, "fine", deps)
            if self.score:
                self.steps[export.name] = export
        if self.score:
            self.steps[score.name] = score


def run_rows(work: Path, profile: str, rows: list[str], pack: Path | None = None, data: Path = protocol.REAL_DATA,
             device: str = "cpu", jobs: int = 1, threads: int | None = None, curve_on_test: bool = True,
             score: bool = True) -> RunResult:
    """Run what is missing or outdated of `rows` and of the rows they need, `jobs` steps at once."""
    steps = row_steps(work, as_profile(profile), profile, rows, pack, data, device, threads, curve_on_test, score)
    return run_steps(work, steps, jobs=jobs, progress=False, desc="benchmark rows")


def _export_and_score(work: Path, prof: Profile, row: str, deps: tuple[str, ...], data: Path,
                      threads: int | None) -> tuple[Step, Step]:
    """Row `row`'s export step (after `deps`) and its score step."""
    modality = prof.rows[row].modality
    return (Step(f"r{row}.export", deps, func=lambda: _export(work, prof, row), settings={"modality": modality}),
            Step(f"r{row}.score", (f"r{row}.export",), func=lambda: _score(work, prof, row, data, threads),
                 settings={"modality": modality, "data": str(data)}))


def _export(work: Path, profile: Profile, row: str) -> str:
    from .export import export_row
    from .layout import machine

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
