"""Networks and losses of the CycleGAN: shapes, value ranges, analytic loss values, the image pool."""
import pytest
import torch

from training.cyclegan.networks import (DiceCELoss, ImagePool, LSGANLoss, PatchDiscriminator, ResnetGenerator,
                                        UNet2D, attention_map, count_parameters, init_weights)

torch.set_num_threads(1)


def test_generator_shape_and_range():
    g = init_weights(ResnetGenerator(1, 1, ngf=8, n_blocks=2))
    y = g(torch.randn(2, 1, 32, 48))
    assert y.shape == (2, 1, 32, 48)
    assert y.abs().max() <= 1.0


def test_default_generator_is_the_seed_size():
    # pytorch-CycleGAN's resnet_9blocks with 64 filters, 1 -> 1 channel: 11,365,633 parameters
    assert count_parameters(ResnetGenerator(1, 1, 64, 9)) == 11_365_633


@pytest.mark.parametrize("n_layers,size,expected", [(3, 64, 6), (2, 32, 6), (1, 32, 14)])
def test_patch_discriminator_grid(n_layers, size, expected):
    d = PatchDiscriminator(2, ndf=8, n_layers=n_layers)
    out = d(torch.randn(3, 2, size, size))
    assert out.shape == (3, 1, expected, expected)


def test_unet_and_attention():
    s = init_weights(UNet2D(1, num_classes=5, filters=4, depth=3))
    logits = s(torch.randn(2, 1, 32, 40))
    assert logits.shape == (2, 5, 32, 40)
    a = attention_map(logits)
    assert a.shape == (2, 1, 32, 40)
    assert a.min() >= 0 and a.max() <= 1
    # analytic: background logit +inf -> attention 0; an organ logit dominating -> attention 1
    sure_bg = torch.zeros(1, 3, 2, 2)
    sure_bg[:, 0] = 50
    assert torch.allclose(attention_map(sure_bg), torch.zeros(1, 1, 2, 2), atol=1e-6)
    sure_organ = torch.zeros(1, 3, 2, 2)
    sure_organ[:, 2] = 50
    assert torch.allclose(attention_map(sure_organ), torch.ones(1, 1, 2, 2), atol=1e-6)
    assert torch.allclose(attention_map(torch.zeros(1, 4, 2, 2)), torch.full((1, 1, 2, 2), 0.75))


def test_lsgan_loss_values():
    loss = LSGANLoss()
    assert loss(torch.ones(2, 1, 3, 3), True) == 0
    assert loss(torch.zeros(2, 1, 3, 3), False) == 0
    assert loss(torch.zeros(2, 1, 3, 3), True) == 1
    assert loss(torch.full((1, 1, 2, 2), 0.5), False) == pytest.approx(0.25)


def test_dice_ce_loss_perfect_and_wrong():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1
    target[:, 5:7, 5:7] = 3
    perfect = 40.0 * torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    loss = DiceCELoss()
    # class 2 absent in target and prediction: counts as Dice 1; everything else right -> ~0
    assert loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    wrong = 40.0 * torch.nn.functional.one_hot((target + 1) % 4, 4).permute(0, 3, 1, 2).float()
    assert loss(wrong, target).item() > 40            # CE ~ 40 per pixel + Dice loss ~1
    uniform = torch.zeros(2, 4, 8, 8, requires_grad=True)
    value = loss(uniform, target)
    value.backward()
    assert uniform.grad.abs().sum() > 0


def test_image_pool():
    torch.manual_seed(0)
    off = ImagePool(0)
    x = torch.randn(2, 1, 4, 4)
    assert off.query(x) is x
    pool = ImagePool(3)
    first = pool.query(x)
    assert torch.equal(first, x) and len(pool.images) == 2
    for _ in range(10):
        out = pool.query(torch.randn(2, 1, 4, 4))
        assert out.shape == (2, 1, 4, 4)
    assert len(pool.images) == 3
    state = pool.state_dict()
    other = ImagePool(1)
    other.load_state_dict(state)
    assert other.size == 3 and all(torch.equal(a, b) for a, b in zip(other.images, pool.images, strict=True))
