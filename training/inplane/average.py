"""A weight-average row (a "model soup", Wortsman et al., ICML 2022): the uniform mean of the fine weights of rows
trained from one start (e.g. RA6q and RA6z, both from RA5q's weights, differing only in their appearance policy).
No training of its own: its fine stage is the mean, its coarse stage the shared one, its card made by `export`
like any row's. Averaging rows that do not share a start (or a round with its own next round) is allowed but has
not helped here (results README)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from inference.atomic import atomic_path, write_json

from .layout import stage_dirs


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform mean of state dicts of one network: floating tensors averaged (in float64, cast back), any other
    entry (a counter) taken when every state agrees on it. A ValueError names the first key or shape that differs."""
    if len(states) < 2:
        raise ValueError(f"averaging needs at least two state dicts, got {len(states)}")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys:
            diff = sorted(set(s) ^ set(keys))
            raise ValueError(f"state {i} holds other tensors than state 0 ({diff[:3] or 'another order'})")
    out = {}
    for k in keys:
        vals = [s[k] for s in states]
        if any(v.shape != vals[0].shape for v in vals):
            raise ValueError(f"{k}: shapes differ ({[tuple(v.shape) for v in vals]}): not one network")
        if vals[0].is_floating_point():
            out[k] = (sum(v.double() for v in vals) / len(vals)).to(vals[0].dtype)
        elif all(torch.equal(v, vals[0]) for v in vals):
            out[k] = vals[0].clone()
        else:
            raise ValueError(f"{k}: a non-floating entry that differs between the states cannot be averaged")
    return out


def average_fine(work: Path, members: tuple[str, ...], out: Path) -> Path:
    """Write the mean of the trained fine stages of rows `members` into the stage folder `out`: summary.json (the
    members' label ids, which must agree; their summed iterations and seconds; `averaged_from` and each member's
    own facts), then final.pt, the file that marks a finished stage."""
    dirs = [stage_dirs(work, m)["fine"] for m in members]
    missing = [str(d / "final.pt") for d in dirs if not (d / "final.pt").is_file()]
    if missing:
        raise ValueError(f"averaging rows {list(members)}: train them first ({missing[0]} missing)")
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
    if any(s["label_ids"] != summaries[0]["label_ids"] for s in summaries):
        raise ValueError(f"averaging rows {list(members)}: their fine stages output other labels "
                         f"({[s['label_ids'] for s in summaries]})")
    states = [torch.load(d / "final.pt", map_location="cpu", weights_only=True) for d in dirs]
    iterations = sum(s["iterations"] for s in summaries)
    trained_s = round(sum(s["trained_s"] for s in summaries), 1)
    summary = {"averaged_from": list(members), "label_ids": summaries[0]["label_ids"], "iterations": iterations,
               "trained_s": trained_s, "seconds_per_iteration": round(trained_s / max(iterations, 1), 4),
               "volumes": sorted({v for s in summaries for v in s["volumes"]}),
               **{k: summaries[0][k] for k in ("torch", "device", "threads")},
               "members": {m: {k: s.get(k) for k in ("iterations", "trained_s", "init", "appearance")}
                           for m, s in zip(members, summaries, strict=True)}}
    write_json(out / "summary.json", summary, mkdir=True)
    with atomic_path(out / "final.pt") as tmp:
        torch.save(average_states(states), tmp)
    return out
