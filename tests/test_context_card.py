"""A model card's context stage: its validation, training.export.add_context, and the engine running it (the
added organ lands only where the fine labels were background; every other voxel is the model's without it)."""
from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch

from inference.config import ContextConfig, ModelCardError, Normalization, StageConfig
from inference.model_folder import load_model_folder, sha256_of, write_card
from inference.network import build_network
from inference.pipeline import CaseRecord, EngineOptions, Segmenter
from training.export import add_context, compose_model

from helpers import make_random_model, tiny_arch, tiny_stage
from phantoms import blob_image

NO_DUODENUM = tuple(v for v in range(14) if v != 12)
INPUTS = NO_DUODENUM[1:]
CHANNELS = 1 + len(INPUTS)


def context_stage(spacing=(3.0, 2.0, 2.0), channels=CHANNELS, labels=(0, 12), scheme="none") -> StageConfig:
    return StageConfig(spacing_mm=spacing, patch_size=(16, 32, 32), normalization=Normalization(scheme),
                       architecture=replace(tiny_arch(), input_channels=channels), label_ids=labels)


def context_net(stage: StageConfig, bias: float = 10.0) -> torch.nn.Module:
    torch.manual_seed(5)
    net = build_network(stage.architecture, stage.num_classes)
    with torch.no_grad():
        net.decoder.seg_layers[-1].bias[1] += bias   # the added organ wins wherever it may be written
    return net


@pytest.fixture()
def models(tmp_path):
    stages = {k: tiny_stage(s, (16, 32, 32), labels=NO_DUODENUM) for k, s in (("coarse", (6.0, 6.0, 6.0)),
                                                                                ("fine", (3.0, 2.0, 2.0)))}
    plain = make_random_model(tmp_path / "plain", seed=3, modalities=("MRI",), bias_foreground=0.3, **stages)
    ctx = ContextConfig(stage=context_stage(), inputs=INPUTS, adds=12)
    add_context(plain, tmp_path / "ctx", net=context_net(ctx.stage), context=ctx, name="ctx",
                provenance={"training": "none: random weights for tests"})
    return tmp_path, plain, tmp_path / "ctx"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_context_organ_fills_background_only_and_no_other_voxel_changes(models, backend):
    root, plain, ctx = models
    image = blob_image((24, 48, 48), radius=14.0)
    out = {}
    for name in ("plain", "ctx"):
        rec = CaseRecord()
        seg = Segmenter(EngineOptions(weights_dir=root, model=name, device="cpu", backend=backend))
        out[name] = seg.segment_array(image, (3.0, 2.0, 2.0), "MRI", rec)
    assert "context" in rec.seconds and "context" not in CaseRecord().seconds
    added = out["ctx"] == 12
    assert added.any() and not (out["plain"] == 12).any()
    assert (out["plain"][added] == 0).all()                       # only background became the added organ
    assert (out["ctx"][~added] == out["plain"][~added]).all()     # every other voxel is the model's without it


def test_add_context_copies_the_stages_and_records_the_new_one(models):
    root, plain, ctx = models
    card, src = load_model_folder(ctx, verify=True).card, load_model_folder(plain).card
    assert card.stage_names == ("coarse", "fine", "context") and src.stage_names == ("coarse", "fine")
    assert card.context.adds == 12 and card.context.replaces == (0,) and set(card.context.stage.files) == {
        "torch", "onnx"}
    assert 12 in card.postprocess.largest_component_organs
    for stage in ("coarse", "fine"):
        for backend, fname in card.stage(stage).files.items():
            assert sha256_of(ctx / fname) == sha256_of(plain / src.stage(stage).files[backend])
    assert card.provenance["context"]["training"].startswith("none") and card.provenance["context"]["parameters"] > 0
    # the card round-trips through JSON, and a composed model keeps the context stage with its fine stage
    assert load_model_folder(compose_model(plain, ctx, root / "comp", name="comp")).card.context == replace(
        card.context, stage=replace(card.context.stage, files={k: f"context.{v.rsplit('.', 1)[1]}"
                                                               for k, v in card.context.stage.files.items()}))
    with pytest.raises(ValueError, match="context stage already"):
        add_context(ctx, root / "again", net=context_net(card.context.stage), context=card.context, name="again",
                    provenance={})


def test_a_tampered_context_file_is_refused(models):
    _, _, ctx = models
    (ctx / "context.onnx").write_bytes(b"not a network")
    with pytest.raises(ModelCardError, match="context.onnx"):
        load_model_folder(ctx, verify=True)


@pytest.mark.parametrize("change, message", [
    (dict(stage=context_stage(channels=5)), "channels"),
    (dict(stage=context_stage(labels=(0, 11))), "label_ids"),
    (dict(stage=context_stage(scheme="zscore")), "normalisation"),
    (dict(adds=4), "neither reads nor replaces"),
    (dict(replaces=(12,)), "neither reads nor replaces"),
    (dict(inputs=(1, 1)), "distinct"),
    (dict(near=(12,)), "near"),
    (dict(near=(4,), margin_mm=(1.0, -1.0, 0.0)), "margin_mm"),
])
def test_context_config_refuses_an_inconsistent_entry(change, message):
    fields = dict(stage=context_stage(), inputs=INPUTS, adds=12) | change
    with pytest.raises(ModelCardError, match=message):
        ContextConfig(**fields)


def test_a_card_refuses_a_context_stage_off_the_fine_grid_or_adding_a_fine_organ(models):
    _, _, ctx = models
    raw = json.loads((ctx / "model.json").read_text())
    ctx_cfg = ContextConfig.from_dict(raw["context"])
    with pytest.raises(ModelCardError, match="fine grid"):
        ctx_cfg.check_fits(tiny_stage((3.0, 1.0, 1.0), (16, 32, 32), labels=NO_DUODENUM))
    with pytest.raises(ModelCardError, match="added organ"):
        ctx_cfg.check_fits(tiny_stage((3.0, 2.0, 2.0), (16, 32, 32)))   # the fine stage predicts 12 itself
    raw["context"]["stage"]["spacing_mm"] = [3.0, 1.0, 1.0]
    (ctx / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="fine grid"):
        load_model_folder(ctx, verify=False)
    assert asdict(ctx_cfg)["inputs"] == INPUTS


def test_add_context_refuses_a_model_whose_stages_share_no_backend(models):
    root, plain, _ = models
    card = load_model_folder(plain).card
    write_card(replace(card, coarse=replace(card.coarse, files={"onnx": "coarse.onnx"}),
                       fine=replace(card.fine, files={"torch": "fine.pt"})), plain)
    ctx = ContextConfig(stage=context_stage(), inputs=INPUTS, adds=12)
    with pytest.raises(ValueError, match="no backend in common"):
        add_context(plain, root / "none", net=context_net(ctx.stage), context=ctx, name="none", provenance={})
