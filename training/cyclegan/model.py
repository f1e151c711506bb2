"""Organ Attention CycleGAN: model wiring and the optimisation step.

Domains: A = CT (with organ labels y_A), B = the target modality (MRI or PET, unlabelled).

    fake_B = G_A(real_A)   rec_A = G_B(fake_B)        fake_A = G_B(real_B)   rec_B = G_A(fake_A)
    A(x)   = 1 - softmax(S(x))[background]            (organ attention)

Generator objective (one step of Adam on G_A and G_B; discriminators and S frozen, S still passes gradients):
    L_G = LS(D_A(fake_B), 1) + LS(D_B(fake_A), 1)
        + lambda_cycle    * (|rec_A - real_A|_1 + |rec_B - real_B|_1)
        + lambda_identity * (|G_A(real_B) - real_B|_1 + |G_B(real_A) - real_A|_1)
        + lambda_local    * LS(D_A_local([fake_B, A(fake_B)]), 1)          (attention mode)
        + lambda_seg      * DiceCE(S(fake_B), y_A)                         (attention mode)
Discriminators (fakes drawn from image pools):
    L_D_A = 1/2 [LS(D_A(real_B), 1) + LS(D_A(fake_B), 0)]
          + lambda_local * 1/2 [LS(D_A_local([real_B, A(real_B)]), 1) + LS(D_A_local([fake_B, A(fake_B)]), 0)]
    L_D_B = 1/2 [LS(D_B(real_A), 1) + LS(D_B(fake_A), 0)]
Segmenter (on detached fakes):
    L_S = DiceCE(S(fake_B), y_A)

Plain mode (`attention=False`) is CycleGAN: no local discriminator, no segmentation term in L_G. With
`probe_segmenter` S is still trained on the detached fakes, but never reaches G: it only measures the fakes.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F

from .networks import (DiceCELoss, ImagePool, LSGANLoss, PatchDiscriminator, ResnetGenerator, UNet2D,
                       attention_map, init_weights)
from .options import CycleGANOptions


def set_requires_grad(nets, flag: bool) -> None:
    for net in nets:
        if net is not None:
            net.requires_grad_(flag)


def lr_factor(epoch: int, opts: CycleGANOptions) -> float:
    """Constant for the first epochs - decay_epochs epochs (0-based `epoch`), then linear decay towards 0."""
    decay = min(opts.decay_epochs, opts.epochs)
    constant = opts.epochs - decay
    return 1.0 - max(0, epoch + 1 - constant) / float(decay + 1)


class OrganAttentionCycleGAN(nn.Module):
    def __init__(self, opts: CycleGANOptions, device: torch.device | str = "cpu"):
        super().__init__()
        self.opts = opts
        self.device = torch.device(device)
        self.G_A = init_weights(ResnetGenerator(1, 1, opts.ngf, opts.n_blocks))      # CT -> target
        self.G_B = init_weights(ResnetGenerator(1, 1, opts.ngf, opts.n_blocks))      # target -> CT
        self.D_A = init_weights(PatchDiscriminator(1, opts.ndf, opts.n_layers_d))    # global, target domain
        self.D_B = init_weights(PatchDiscriminator(1, opts.ndf, opts.n_layers_d))    # CT domain
        self.D_A_local = (init_weights(PatchDiscriminator(2, opts.ndf, opts.n_layers_d))  # (image, attention)
                          if opts.attention else None)
        self.S = (init_weights(UNet2D(1, opts.num_classes, opts.seg_filters, opts.seg_depth))
                  if opts.uses_segmenter else None)
        self.to(self.device)

        self.criterion_gan = LSGANLoss()
        self.criterion_seg = DiceCELoss()
        self.fake_A_pool = ImagePool(opts.pool_size)
        self.fake_B_pool = ImagePool(opts.pool_size)

        adam = dict(lr=opts.lr, betas=(opts.beta1, opts.beta2), amsgrad=opts.amsgrad)
        self.optimizer_G = torch.optim.Adam(itertools.chain(self.G_A.parameters(), self.G_B.parameters()), **adam)
        d_params = (net.parameters() for net in (self.D_A, self.D_B, self.D_A_local) if net is not None)
        self.optimizer_D = torch.optim.Adam(itertools.chain(*d_params), **adam)
        self.optimizer_S = torch.optim.Adam(self.S.parameters(), **adam) if self.S is not None else None

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        named = (("G", self.optimizer_G), ("D", self.optimizer_D), ("S", self.optimizer_S))
        return {name: opt for name, opt in named if opt is not None}

    def set_epoch(self, epoch: int) -> float:
        """Learning rate of the (0-based) epoch, set on every optimizer; returns it."""
        lr = self.opts.lr * lr_factor(epoch, self.opts)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    # ------------------------------------------------------------------------------------------------------------
    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real_A = batch["A"].to(self.device, non_blocking=True)
        self.label_A = batch["A_label"].to(self.device, non_blocking=True)
        self.real_B = batch["B"].to(self.device, non_blocking=True)

    def forward(self) -> None:
        self.fake_B = self.G_A(self.real_A)
        self.rec_A = self.G_B(self.fake_B)
        self.fake_A = self.G_B(self.real_B)
        self.rec_B = self.G_A(self.fake_A)

    def generator_losses(self) -> dict[str, torch.Tensor]:
        o = self.opts
        losses = {
            "G_A": self.criterion_gan(self.D_A(self.fake_B), True),
            "G_B": self.criterion_gan(self.D_B(self.fake_A), True),
            "cycle_A": o.lambda_cycle * F.l1_loss(self.rec_A, self.real_A),
            "cycle_B": o.lambda_cycle * F.l1_loss(self.rec_B, self.real_B),
        }
        if o.lambda_identity > 0:
            losses["idt_A"] = o.lambda_identity * F.l1_loss(self.G_A(self.real_B), self.real_B)
            losses["idt_B"] = o.lambda_identity * F.l1_loss(self.G_B(self.real_A), self.real_A)
        if o.attention:
            seg_logits = self.S(self.fake_B)
            attention = attention_map(seg_logits)
            losses["G_A_local"] = o.lambda_local * self.criterion_gan(
                self.D_A_local(torch.cat([self.fake_B, attention], 1)), True)
            losses["seg_G"] = o.lambda_seg * self.criterion_seg(seg_logits, self.label_A)
        return losses

    def backward_G(self) -> dict[str, torch.Tensor]:
        losses = self.generator_losses()
        losses["G"] = sum(losses.values())
        losses["G"].backward()
        return losses

    def discriminator_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.criterion_gan(net(real), True) + self.criterion_gan(net(fake.detach()), False))

    def backward_D(self) -> dict[str, torch.Tensor]:
        fake_B = self.fake_B_pool.query(self.fake_B)
        fake_A = self.fake_A_pool.query(self.fake_A)
        losses = {"D_A": self.discriminator_loss(self.D_A, self.real_B, fake_B),
                  "D_B": self.discriminator_loss(self.D_B, self.real_A, fake_A)}
        total = losses["D_A"] + losses["D_B"]
        if self.opts.attention:
            with torch.no_grad():
                att_real = attention_map(self.S(self.real_B))
                att_fake = attention_map(self.S(fake_B))
            losses["D_A_local"] = self.discriminator_loss(self.D_A_local, torch.cat([self.real_B, att_real], 1),
                                                          torch.cat([fake_B, att_fake], 1))
            total = total + self.opts.lambda_local * losses["D_A_local"]
        total.backward()
        return losses

    def backward_S(self) -> dict[str, torch.Tensor]:
        loss = self.criterion_seg(self.S(self.fake_B.detach()), self.label_A)
        loss.backward()
        return {"S": loss}

    def optimize_parameters(self) -> dict[str, float]:
        """One iteration on the current batch: G step, D step, S step. Returns the losses (floats)."""
        self.forward()
        # generators: discriminators and S frozen (S still carries the segmentation gradient to G_A)
        set_requires_grad([self.D_A, self.D_B, self.D_A_local, self.S], False)
        self.optimizer_G.zero_grad(set_to_none=True)
        losses = self.backward_G()
        self.optimizer_G.step()
        # discriminators
        set_requires_grad([self.D_A, self.D_B, self.D_A_local], True)
        self.optimizer_D.zero_grad(set_to_none=True)
        losses.update(self.backward_D())
        self.optimizer_D.step()
        # segmenter on the (detached) fakes
        if self.S is not None:
            set_requires_grad([self.S], True)
            self.optimizer_S.zero_grad(set_to_none=True)
            losses.update(self.backward_S())
            self.optimizer_S.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def evaluate_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The generator and segmenter losses on `batch` without any update (pools untouched)."""
        self.set_input(batch)
        self.forward()
        losses = self.generator_losses()
        losses["G"] = sum(losses.values())
        if self.S is not None:
            losses["S"] = self.criterion_seg(self.S(self.fake_B), self.label_A)
        return {k: float(v) for k, v in losses.items()}

    # ------------------------------------------------------------------------------------------------------------
    def training_state(self) -> dict:
        """Everything besides the weights that a resumed run needs."""
        return {"optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "pools": {"A": self.fake_A_pool.state_dict(), "B": self.fake_B_pool.state_dict()}}

    def load_training_state(self, state: dict) -> None:
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        self.fake_A_pool.load_state_dict(state["pools"]["A"], self.device)
        self.fake_B_pool.load_state_dict(state["pools"]["B"], self.device)
