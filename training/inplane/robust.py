"""The sequence-robustness columns of a benchmark row: one MRI model scored on every MRI contrast we can measure.

    (a) t2      the CHAOS T2-SPIR test scans (protocol.TEST_CASES): FLARE DSC / NSD on liver, kidneys, spleen
    (b) t1      TotalSegmentator's real T1-weighted abdominal crop `ts_mr_sm` (3 mm, opposed-phase-like): DSC of
                the 12 organs its reference labels hold (1-9, 11, 12, 13; no esophagus). The reference was made by
                TotalSegmentator's MR model, not by hand: a reference, not a truth; one scan.
    (c) stress  the four test scans under the fixed contrast transforms of `eval.stress` (invert, curve, bias,
                lowres): 16 scans scored like (a) against the scans' own labels
    (e) ct      TotalSegmentator's real CT crop `ts_ct_sm` (3 mm), the same 12 organs against its model-made
                reference: not an MRI contrast, but the only duodenum reference here besides (b)
    (d) coronal, sagittal
                the four test scans resliced into thick coronal / sagittal slices (`eval.reslice`: 5.5 mm slices
                of 1.5 mm pixels, the acquisition geometry of many kidney, MRCP and liver protocols), scored like
                (a) against their label maps resliced onto the same grids

Nothing is trained or chosen on (b) or (c): they are read only here. Each set is segmented by the engine in a fresh
process (ONNX Runtime, CPU), as the submission runs, and scored with `python -m eval score`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from inference.atomic import copy_file, write_json, write_text
from inference.labels import FLARE_ORGANS

from . import protocol
from .report import _test_folders, predict_and_score, read_scores, score_summary

T1_CASE = "ts_mr_sm"
T1_ORGANS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13)   # what its reference labels (no esophagus)
CROPS = {"t1": T1_CASE, "ct": "ts_ct_sm"}              # set -> TotalSegmentator crop (both: the organs above)
CORE = protocol.SCORED_ORGANS                          # liver, right kidney, spleen, left kidney
SETS = ("t2", "t1", "stress", "coronal", "sagittal", "ct")
AXIAL_LIKE = ("t2", "coronal", "sagittal")             # the test scans in some geometry: DSC / NSD of CORE


def _link(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise FileNotFoundError(f"{src}: missing")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def set_folders(name: str, root: Path, data: Path = protocol.REAL_DATA) -> tuple[Path, Path]:
    """(images, labels) folders of links for set `name` under `root` (the stress set is made there once)."""
    images, labels = root / name / "images", root / name / "labels"
    if name == "t2":
        images, labels = _test_folders(root / name, data)
    elif name in CROPS:
        ts, case = data / "totalseg_examples", CROPS[name]
        _link(ts / "images" / f"{case}_0000.nii.gz", images / f"{case}_0000.nii.gz")
        _link(ts / "labels" / f"{case}.nii.gz", labels / f"{case}.nii.gz")
    elif name == "stress":
        from eval.stress import make_stress_set

        made = root / "stress_made"
        make_stress_set([c.image for c in protocol.test_cases(data)], data / "mr_chaos_t2" / "labels", made)
        images, labels = made / "images", made / "labels"
    elif name in ("coronal", "sagittal"):
        from eval.reslice import make_reslice_set

        made = root / f"reslice_{name}"
        make_reslice_set([c.image for c in protocol.test_cases(data)], data / "mr_chaos_t2" / "labels", made,
                         planes=(name,))
        images, labels = made / "images", made / "labels"
    else:
        raise ValueError(f"unknown set {name!r} (known: {', '.join(SETS)})")
    return images, labels


def score_sets(model: Path, out: Path, data: Path = protocol.REAL_DATA, sets=SETS, threads: int | None = None,
               cache: Path | None = None) -> Path:
    """Score `model` (a weights/<name> folder) on each set into out/<set>/scores.csv; write out/robust.json (the
    summary) and return it. A set scored after the model's card was last written is kept. `cache`: where the
    sets' folders are made (default: out/sets)."""
    cache = cache or out / "sets"
    card_time = (model / "model.json").stat().st_mtime
    for name in sets:
        done = out / name / "scores.csv"
        if done.is_file() and done.stat().st_mtime > card_time:
            continue
        images, labels = set_folders(name, cache, data)
        organs = T1_ORGANS if name in CROPS else CORE
        predict_and_score(model, images, labels, out / name, organs, threads)
    summary = summarise(out)
    write_json(out / "robust.json", summary)
    return out / "robust.json"


def summarise(out: Path) -> dict:
    """{set: numbers} from the score files under `out` (the sets scored so far)."""
    res: dict = {}
    for name in AXIAL_LIKE:
        path = out / name / "scores.csv"
        if path.is_file():
            e = score_summary(path, sorted({case for case, _ in read_scores(path)}), CORE)
            res[name] = {"dsc": e["mean"][0], "nsd": e["mean"][1],
                         "organs": {FLARE_ORGANS[o]: list(e[o]) for o in CORE}}
    for name, case in CROPS.items():
        path = out / name / "scores.csv"
        if path.is_file():
            sc = read_scores(path)
            dice = {FLARE_ORGANS[o]: sc[(case, o)][0] for o in T1_ORGANS if (case, o) in sc}
            res[name] = {"core_dice": float(np.mean([dice[FLARE_ORGANS[o]] for o in CORE])),
                         "all_dice": float(np.mean(list(dice.values()))), "organs": dice}
    st = out / "stress" / "scores.csv"
    if st.is_file():
        sc = read_scores(st)
        by_t: dict[str, list[float]] = {}
        for (case, _organ), (dsc, _nsd) in sc.items():
            by_t.setdefault(case.rsplit("_", 1)[1], []).append(dsc)
        res["stress"] = {"dsc": float(np.mean([v[0] for v in sc.values()])),
                         "nsd": float(np.mean([v[1] for v in sc.values()])),
                         "transforms": {t: float(np.mean(v)) for t, v in sorted(by_t.items())}}
    return res


def columns_table(rows: dict[str, tuple[str, Path]]) -> str:
    """Markdown: one line per row {key: (title, robust.json)}: (a) T2 DSC / NSD, (b) T1 crop Dice (liver, kidneys,
    spleen; all 12; the duodenum), (c) stress DSC overall and per transform, (d) the reslices' DSC, (e) the CT
    crop's Dice (all 12; the duodenum). A set not scored: a dash."""
    from eval.stress import TRANSFORMS

    head = ("| row | (a) T2 DSC | (a) T2 NSD | (b) T1 liver | (b) T1 r. kidney | (b) T1 spleen | (b) T1 l. kidney "
            "| (b) T1 mean of 4 | (b) T1 mean of 12 | (b) T1 duodenum | (c) stress DSC | "
            + " | ".join(f"(c) {t}" for t in TRANSFORMS)
            + " | (d) coronal DSC | (d) sagittal DSC | (e) CT mean of 12 | (e) CT duodenum |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    for title, path in rows.values():
        s = json.loads(path.read_text())
        t2, t1, st, ct = s.get("t2", {}), s.get("t1", {}), s.get("stress", {}), s.get("ct", {})
        cells = [pct(t2.get("dsc")), pct(t2.get("nsd"))]
        cells += [pct(t1.get("organs", {}).get(FLARE_ORGANS[o])) for o in CORE]
        cells += [f"**{pct(t1.get('core_dice'))}**", pct(t1.get("all_dice")),
                  pct(t1.get("organs", {}).get(FLARE_ORGANS[12])), f"**{pct(st.get('dsc'))}**"]
        cells += [pct(st.get("transforms", {}).get(t)) for t in TRANSFORMS]
        cells += [pct(s.get(plane, {}).get("dsc")) for plane in ("coronal", "sagittal")]
        cells += [pct(ct.get("all_dice")), pct(ct.get("organs", {}).get(FLARE_ORGANS[12]))]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def publish(scored: Path, rows: list[str], titles: dict[str, str], out: Path, sources: dict[str, str]) -> Path:
    """Copy each row's robust.json and per-set scores from `scored`/r<row>/ into `out`/r<row>/ and write
    out/table.md (the columns of every row given, in that order) with where each row's weights came from."""
    table_rows = {}
    for row in rows:
        src = scored / f"r{row}"
        if not (src / "robust.json").is_file():
            raise FileNotFoundError(f"{src / 'robust.json'}: row {row} is not scored (python -m training.inplane robust)")
        dst = out / f"r{row}"
        copy_file(src / "robust.json", dst / "robust.json", mkdir=True)
        for name in SETS:
            for f in ("scores.csv", "predict.json"):
                if (src / name / f).is_file():
                    copy_file(src / name / f, dst / name / f, mkdir=True)
        table_rows[row] = (titles.get(row, row), dst / "robust.json")
    notes = "\n".join(f"- ({row}): {sources[row]}" for row in rows if row in sources)
    write_text(out / "table.md", columns_table(table_rows) + "\nWeights scored:\n" + notes + "\n")
    return out / "table.md"


def record_in_card(model: Path, robust_json: Path) -> Path:
    """The columns of `robust_json` (score_sets' output) as the model card's provenance.benchmark.robustness, and,
    where it has the T2 set, the benchmark's test scores (per-organ DSC / NSD and their means over the test scans,
    as `bench.ship` records them) from that set; the card is rewritten atomically and re-verified, the weight files
    are untouched."""
    from dataclasses import replace

    from inference.model_folder import load_model_folder, write_card

    folder = load_model_folder(model, verify=True)
    prov = dict(folder.card.provenance)
    columns = json.loads(Path(robust_json).read_text())
    bench = dict(prov.get("benchmark", {})) | {"robustness": columns}
    if "t2" in columns:
        t2 = columns["t2"]
        bench |= {"protocol": bench.get("protocol", protocol.NAME),
                  "test_cases": list(protocol.TEST_CASES),
                  "test_dsc": {o: round(v[0], 4) for o, v in t2["organs"].items()},
                  "test_nsd": {o: round(v[1], 4) for o, v in t2["organs"].items()},
                  "mean_dsc": round(t2["dsc"], 4), "mean_nsd": round(t2["nsd"], 4),
                  "scored_with": "python -m training.inplane robust (set t2: python -m inference, ONNX Runtime, "
                                 "CPU + python -m eval score)"}
    prov["benchmark"] = bench
    path = write_card(replace(folder.card, provenance=prov), model)
    load_model_folder(model, verify=True)
    return path
