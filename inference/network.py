"""PlainConvUNet built from a model card's architecture description (needs torch).

The module tree mirrors dynamic-network-architectures' PlainConvUNet (the network nnU-Net v2 trains), so a
state_dict saved by an nnU-Net checkpoint loads here with strict=True and the other way round: encoder.stages[s]
is a Sequential holding one StackedConvBlocks; each conv block has .conv, .norm, .nonlin and .all_modules; the
decoder keeps a reference to the encoder (hence the duplicated `decoder.encoder.*` keys). Written here rather than
imported so that inference does not depend on nnU-Net's package (and its timm/torchvision chain).
"""
from __future__ import annotations

import torch
from torch import nn

from .config import Architecture


def _norm(arch: Architecture, channels: int) -> nn.Module:
    if arch.norm == "InstanceNorm3d":
        return nn.InstanceNorm3d(channels, eps=arch.norm_eps, affine=arch.norm_affine)
    return nn.BatchNorm3d(channels, eps=arch.norm_eps, affine=arch.norm_affine)


def _nonlin(arch: Architecture) -> nn.Module:
    if arch.nonlin == "LeakyReLU":
        return nn.LeakyReLU(negative_slope=arch.nonlin_negative_slope, inplace=True)
    return nn.ReLU(inplace=True)


class ConvNormAct(nn.Module):
    """conv -> norm -> nonlinearity ('same' padding)."""

    def __init__(self, arch: Architecture, c_in: int, c_out: int, kernel: tuple[int, ...], stride: tuple[int, ...]):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, padding=[(k - 1) // 2 for k in kernel],
                              bias=arch.conv_bias)
        self.norm = _norm(arch, c_out)
        self.nonlin = _nonlin(arch)
        self.all_modules = nn.Sequential(self.conv, self.norm, self.nonlin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


class StackedConvBlocks(nn.Module):
    def __init__(self, arch: Architecture, n_convs: int, c_in: int, c_out: int, kernel, first_stride):
        super().__init__()
        blocks = [ConvNormAct(arch, c_in, c_out, kernel, first_stride)]
        blocks += [ConvNormAct(arch, c_out, c_out, kernel, (1, 1, 1)) for _ in range(1, n_convs)]
        self.convs = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class Encoder(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        stages = []
        c_in = arch.input_channels
        for s in range(arch.n_stages):
            c_out = arch.features_per_stage[s]
            stages.append(nn.Sequential(StackedConvBlocks(
                arch, arch.n_conv_per_stage[s], c_in, c_out, arch.kernel_sizes[s], arch.strides[s])))
            c_in = c_out
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    def __init__(self, arch: Architecture, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder  # kept for state_dict compatibility with dynamic-network-architectures
        feats = arch.features_per_stage
        stages, transpconvs, seg_layers = [], [], []
        for s in range(1, arch.n_stages):
            below, skip = feats[-s], feats[-(s + 1)]
            stride = arch.strides[-s]
            transpconvs.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=arch.conv_bias))
            stages.append(StackedConvBlocks(arch, arch.n_conv_per_stage_decoder[s - 1], 2 * skip, skip,
                                            arch.kernel_sizes[-(s + 1)], (1, 1, 1)))
            seg_layers.append(nn.Conv3d(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for s in range(len(self.stages)):
            x = self.transpconvs[s](x)
            x = torch.cat((x, skips[-(s + 2)]), 1)
            x = self.stages[s](x)
        return self.seg_layers[-1](x)


class PlainConvUNet(nn.Module):
    """U-Net returning full-resolution logits (no deep supervision outputs at inference)."""

    def __init__(self, arch: Architecture, num_classes: int):
        super().__init__()
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch, self.encoder, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_network(arch: Architecture, num_classes: int) -> PlainConvUNet:
    return PlainConvUNet(arch, num_classes)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
