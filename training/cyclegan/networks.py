"""Networks and losses of the Organ Attention CycleGAN, in plain torch.

- `ResnetGenerator`: c7s1-ngf, two stride-2 downsamplings, `n_blocks` residual blocks, two upsamplings, c7s1-1 + tanh
  (Johnson et al. / pytorch-CycleGAN), instance norm, reflection padding.
- `PatchDiscriminator`: 70x70 PatchGAN at `n_layers=3` (LSGAN: no sigmoid).
- `UNet2D`: the segmenter S; logits for `num_classes` classes (0 = background).
- `attention_map`: A = 1 - softmax(S(x))[background], in [0, 1], shape (N, 1, H, W).
- `LSGANLoss`, `DiceCELoss`, `ImagePool`.
"""
from __future__ import annotations

import random

import torch
import torch.nn as nn
import torch.nn.functional as F

from inference.network import count_parameters as count_parameters  # the engine's, kept importable from here


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Normal(0, gain) for convolutions, Normal(1, gain) for norm scales, zero biases (pytorch-CycleGAN 'normal')."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


# ----------------------------------------------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator; H and W must be multiples of 4."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), nn.InstanceNorm2d(ngf),
                                   nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores, one per overlapping patch."""

    def __init__(self, in_channels: int = 1, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2 if n < n_layers else 1, padding=1),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True),
                         nn.LeakyReLU(0.01, True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True),
                         nn.LeakyReLU(0.01, True))


class UNet2D(nn.Module):
    """U-Net with `depth` max-poolings (H, W multiples of 2**depth), filters doubling up to 16x `filters`."""

    def __init__(self, in_channels: int = 1, num_classes: int = 14, filters: int = 32, depth: int = 4):
        super().__init__()
        chans = [filters * min(2 ** d, 16) for d in range(depth + 1)]
        self.down = nn.ModuleList([_DoubleConv(chans[d - 1] if d else in_channels, chans[d]) for d in range(depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[d], chans[d - 1], 2, stride=2) for d in range(depth, 0, -1)])
        self.dec = nn.ModuleList([_DoubleConv(2 * chans[d - 1], chans[d - 1]) for d in range(depth, 0, -1)])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for d, block in enumerate(self.down):
            if d:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def attention_map(seg_logits: torch.Tensor) -> torch.Tensor:
    """Organ attention A = 1 - P(background): (N, C, H, W) logits -> (N, 1, H, W) in [0, 1]."""
    return 1.0 - torch.softmax(seg_logits, dim=1)[:, :1]


# ----------------------------------------------------------------------------------------------------------------
class LSGANLoss(nn.Module):
    """Least-squares GAN loss: mean (D(x) - 1)^2 for 'real', mean D(x)^2 for 'fake'."""

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        return F.mse_loss(prediction, torch.full_like(prediction, 1.0 if target_is_real else 0.0))


class DiceCELoss(nn.Module):
    """Cross-entropy + (1 - soft Dice) averaged over the foreground classes, Dice pooled over the batch.

    A class absent from the batch's reference contributes a Dice of ~0 unless the prediction is empty too (the
    smoothing term makes an empty prediction of an absent class score 1)."""

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target)
        probs = torch.softmax(logits, dim=1)[:, 1:]
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        return ce + (1.0 - dice.mean())


class ImagePool:
    """History of generated images (Shrivastava et al.): with probability 1/2 the discriminator sees an older fake.

    `size` 0 disables the pool."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif random.random() > 0.5:
                i = random.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [t.cpu() for t in self.images]}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.size = int(state["size"])
        self.images = [t.to(device) for t in state["images"]]
