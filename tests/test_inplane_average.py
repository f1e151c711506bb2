"""Weight-average rows (training/inplane/average.py): the uniform mean of state dicts with analytic answers, the
average row's fine stage made by `train` from its rows' trained stages, and the profile's rules for such a row."""
from __future__ import annotations

import json

import pytest
import torch

from training.inplane.average import average_states
from training.inplane.recipe import Row, load_profile
from training.inplane.train import train_one


def test_the_mean_of_two_states_is_their_elementwise_average_and_counters_must_agree():
    a = {"w": torch.full((2, 3), 1.0), "b": torch.tensor([3.0, -2.0]), "n": torch.tensor(5)}
    b = {"w": torch.full((2, 3), 4.0), "b": torch.tensor([-1.0, 2.0]), "n": torch.tensor(5)}
    out = average_states([a, b])
    assert torch.equal(out["w"], torch.full((2, 3), 2.5)) and torch.equal(out["b"], torch.tensor([1.0, 0.0]))
    assert out["n"].item() == 5 and out["w"].dtype == torch.float32
    three = average_states([a, b, {**b, "w": torch.full((2, 3), 7.0)}])
    assert torch.allclose(three["w"], torch.full((2, 3), 4.0))
    with pytest.raises(ValueError, match="non-floating"):
        average_states([a, {**b, "n": torch.tensor(6)}])
    with pytest.raises(ValueError, match="shapes differ"):
        average_states([a, {**b, "w": torch.ones(3, 2)}])
    with pytest.raises(ValueError, match="other tensors"):
        average_states([a, {"w": b["w"], "b": b["b"]}])
    with pytest.raises(ValueError, match="at least two"):
        average_states([a])


def _member(work, row, value, label_ids=(0, 1, 2), iterations=100):
    d = work / "rows" / row / "fine"
    d.mkdir(parents=True)
    torch.save({"conv.weight": torch.full((2, 2), value), "conv.bias": torch.tensor([value, -value])}, d / "final.pt")
    (d / "summary.json").write_text(json.dumps({
        "iterations": iterations, "trained_s": 60.0, "label_ids": list(label_ids), "volumes": [f"v_{row}", "btcv_1"],
        "torch": torch.__version__, "device": "cpu", "threads": 1, "appearance": {"strong": True}}))


def test_an_average_row_is_trained_by_averaging_its_rows_fine_stages(tmp_path):
    """`train --row RAs6 --stage fine` (profile cpu: RAs6 averages RA6q and RA6z) writes the mean of their final
    weights with a summary that names them, once; a member missing or with other labels is refused by name."""
    work = tmp_path / "work"
    _member(work, "RA6q", 1.0, iterations=100)
    with pytest.raises(ValueError, match="RA6z/fine/final.pt missing"):
        train_one(work, "cpu", "RAs6", "fine")
    _member(work, "RA6z", 3.0, iterations=300)
    out = train_one(work, "cpu", "RAs6", "fine")
    assert out == work / "rows" / "RAs6" / "fine"
    state = torch.load(out / "final.pt", weights_only=True)
    assert torch.equal(state["conv.weight"], torch.full((2, 2), 2.0)) and torch.equal(state["conv.bias"],
                                                                                     torch.tensor([2.0, -2.0]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["averaged_from"] == ["RA6q", "RA6z"] and summary["iterations"] == 400
    assert summary["trained_s"] == 120.0 and summary["label_ids"] == [0, 1, 2]
    assert summary["volumes"] == ["btcv_1", "v_RA6q", "v_RA6z"] and set(summary["members"]) == {"RA6q", "RA6z"}
    stamp = (out / "final.pt").stat().st_mtime_ns
    assert train_one(work, "cpu", "RAs6", "fine") == out and (out / "final.pt").stat().st_mtime_ns == stamp
    other = tmp_path / "other"
    _member(other, "RA6q", 1.0)
    _member(other, "RA6z", 3.0, label_ids=(0, 1, 3))
    with pytest.raises(ValueError, match="other labels"):
        train_one(other, "cpu", "RAs6", "fine")


def test_an_average_row_names_two_other_rows_and_nothing_to_train_from():
    assert load_profile("cpu").rows["RAs6"].average == ("RA6q", "RA6z")
    assert "average" not in load_profile("cpu").stage_settings("RA6z", "fine")["row"]   # older stages unchanged
    for bad in ({"average": ("A",)}, {"average": ("X", "X")}, {"average": ("S", "A")},
                {"average": ("A", "B"), "start": "A"}, {"average": ("A", "B"), "own_coarse": True}):
        with pytest.raises(ValueError, match="average row"):
            Row(name="S", title="s", **bad)
