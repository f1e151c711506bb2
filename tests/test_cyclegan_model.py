"""Model wiring and the optimisation step on tiny networks (CPU)."""
import copy

import pytest
import torch

from training.cyclegan.model import OrganAttentionCycleGAN, lr_factor, set_requires_grad
from training.cyclegan.options import CycleGANOptions

torch.set_num_threads(1)

TINY = dict(ngf=4, n_blocks=1, ndf=4, n_layers_d=2, seg_filters=4, seg_depth=2, slice_size=32, num_classes=4,
            pool_size=4, batch_size=2)


def fixed_batch(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 1, size, size, generator=g) * 2 - 1
    label = torch.zeros(2, size, size, dtype=torch.long)
    label[:, 8:20, 6:18] = 1
    label[:, 20:26, 20:28] = 2
    a[:, 0][label == 1] = 0.3                           # organs have their own intensity
    a[:, 0][label == 2] = 0.8
    b = torch.rand(2, 1, size, size, generator=g) * 2 - 1
    return {"A": a, "A_label": label, "B": b}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("attention", [True, False])
def test_one_step_updates_every_network(attention):
    torch.manual_seed(0)
    model = OrganAttentionCycleGAN(CycleGANOptions(attention=attention, **TINY))
    assert (model.D_A_local is not None) == attention
    assert model.S is not None                          # plain mode keeps S as a detached probe by default
    before = snapshot(model)
    model.set_input(fixed_batch())
    losses = model.optimize_parameters()
    after = snapshot(model)
    nets = ["G_A", "G_B", "D_A", "D_B", "S"] + (["D_A_local"] if attention else [])
    for net in nets:
        changed = [k for k in before if k.startswith(net + ".") and not torch.equal(before[k], after[k])]
        assert changed, f"{net} did not change"
    expected = {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "G", "D_A", "D_B", "S"}
    if attention:
        expected |= {"G_A_local", "seg_G", "D_A_local"}
    assert set(losses) == expected
    assert all(v == v and v >= 0 for v in losses.values())      # finite, non-negative
    parts = sum(v for k, v in losses.items() if k in {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B",
                                                       "G_A_local", "seg_G"})
    assert losses["G"] == pytest.approx(parts, rel=1e-5)


def test_plain_without_probe_has_no_segmenter():
    model = OrganAttentionCycleGAN(CycleGANOptions(attention=False, probe_segmenter=False, **TINY))
    assert model.S is None and model.D_A_local is None and "S" not in model.optimizers
    model.set_input(fixed_batch())
    assert "S" not in model.optimize_parameters()


def test_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = OrganAttentionCycleGAN(CycleGANOptions(lr=2e-3, **TINY))
    batch = fixed_batch()
    start = model.evaluate_losses(batch)
    for _ in range(8):
        model.set_input(batch)
        model.optimize_parameters()
    end = model.evaluate_losses(batch)
    assert end["cycle_A"] + end["cycle_B"] < start["cycle_A"] + start["cycle_B"]
    assert end["seg_G"] < start["seg_G"]
    assert end["S"] < start["S"]
    non_adversarial = ("cycle_A", "cycle_B", "idt_A", "idt_B", "seg_G")
    assert sum(end[k] for k in non_adversarial) < sum(start[k] for k in non_adversarial)


def test_segmentation_loss_reaches_the_generator_not_the_segmenter():
    torch.manual_seed(0)
    model = OrganAttentionCycleGAN(CycleGANOptions(**TINY))
    model.set_input(fixed_batch())
    model.forward()
    set_requires_grad([model.D_A, model.D_B, model.D_A_local, model.S], False)
    model.generator_losses()["seg_G"].backward()
    assert all(p.grad is None for p in model.S.parameters())
    grads = [p.grad for p in model.G_A.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in model.G_B.parameters())     # seg loss is on G_A(CT) only


def test_plain_generator_loss_ignores_the_segmenter():
    torch.manual_seed(0)
    model = OrganAttentionCycleGAN(CycleGANOptions(attention=False, **TINY))
    model.set_input(fixed_batch())
    model.forward()
    losses = model.generator_losses()
    assert "seg_G" not in losses and "G_A_local" not in losses
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.S.parameters())


def test_lr_schedule_and_set_epoch():
    opts = CycleGANOptions(epochs=10, decay_epochs=4, **TINY)
    factors = [lr_factor(e, opts) for e in range(10)]
    assert factors[:6] == [1.0] * 6
    assert factors[6:] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    short = CycleGANOptions(epochs=2, **TINY)              # decay_epochs 15 > epochs: decays over both
    assert [lr_factor(e, short) for e in range(2)] == pytest.approx([2 / 3, 1 / 3])
    model = OrganAttentionCycleGAN(opts)
    assert model.set_epoch(7) == pytest.approx(opts.lr * 0.6)
    assert all(g["lr"] == pytest.approx(opts.lr * 0.6) for o in model.optimizers.values() for g in o.param_groups)


def test_training_state_round_trip():
    torch.manual_seed(0)
    opts = CycleGANOptions(**TINY)
    model = OrganAttentionCycleGAN(opts)
    model.set_input(fixed_batch())
    model.optimize_parameters()
    clone = OrganAttentionCycleGAN(opts)
    clone.load_state_dict(copy.deepcopy(model.state_dict()))
    clone.load_training_state(copy.deepcopy(model.training_state()))
    assert len(clone.fake_B_pool.images) == 2
    torch.manual_seed(1)
    model.set_input(fixed_batch(1))
    a = model.optimize_parameters()
    torch.manual_seed(1)
    clone.set_input(fixed_batch(1))
    b = clone.optimize_parameters()
    assert a == pytest.approx(b, rel=1e-5)


def test_options_validation_and_files(tmp_path):
    with pytest.raises(ValueError, match="target_modality"):
        CycleGANOptions(target_modality="xray")
    with pytest.raises(ValueError, match="multiple"):
        CycleGANOptions(slice_size=30)
    opts = CycleGANOptions(**TINY)
    opts.save(tmp_path / "o.json")
    assert CycleGANOptions.load(tmp_path / "o.json") == opts
    with pytest.raises(ValueError, match="unknown"):
        CycleGANOptions.from_dict({"ngf": 8, "nfg": 8})
    assert opts.differences(opts.replace(epochs=3, ngf=8)) == ["ngf"]
