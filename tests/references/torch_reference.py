"""A plain PyTorch eager version of the AAE's training step, for `make bench` only (the BiGAN's
PyTorch side is the seed program itself, tests/references/torch_bigan.py).

Same architecture, losses, optimisers and on-device batching as aaejax's AAE, written the way an
eager PyTorch user would: one optimizer per network, autograd through every forward pass.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def _lrelu():
    return nn.LeakyReLU(0.2)


class TorchAAE:
    def __init__(self, device, latent_dim=10, batch_size=32):
        self.device, self.bs, self.latent = device, batch_size, latent_dim
        self.enc = nn.Sequential(nn.Linear(784, 512), _lrelu(), nn.Linear(512, 512), _lrelu()).to(device)
        self.mu, self.lv = nn.Linear(512, latent_dim).to(device), nn.Linear(512, latent_dim).to(device)
        self.dec = nn.Sequential(nn.Linear(latent_dim, 512), _lrelu(), nn.Linear(512, 512), _lrelu(),
                                 nn.Linear(512, 784), nn.Tanh()).to(device)
        self.disc = nn.Sequential(nn.Linear(latent_dim, 512), _lrelu(), nn.Linear(512, 256), _lrelu(),
                                  nn.Linear(256, 1)).to(device)
        adam = lambda ps: torch.optim.Adam(ps, lr=2e-4, betas=(0.5, 0.999))
        self.ae_params = [*self.enc.parameters(), *self.mu.parameters(), *self.lv.parameters(),
                          *self.dec.parameters()]
        self.opt_e = adam([*self.enc.parameters(), *self.mu.parameters(), *self.lv.parameters()])
        self.opt_dec, self.opt_d = adam(self.dec.parameters()), adam(self.disc.parameters())

    def step(self, x):
        """x: float [B, 784] in [-1, 1] on the device."""
        h = self.enc(x)
        mu, lv = self.mu(h), self.lv(h)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        z_real = torch.randn_like(mu)
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(self.disc(z_real), torch.ones(len(x), 1, device=x.device))
                        + F.binary_cross_entropy_with_logits(self.disc(z.detach()), torch.zeros(len(x), 1, device=x.device)))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        rec = F.mse_loss(self.dec(z), x)
        adv = F.binary_cross_entropy_with_logits(self.disc(z), torch.ones(len(x), 1, device=x.device))
        loss = 0.999 * rec + 0.001 * adv
        grads = torch.autograd.grad(loss, self.ae_params)
        for p, g in zip(self.ae_params, grads):
            p.grad = g
        self.opt_e.step()
        self.opt_dec.step()
        return d_loss, loss


def run_epoch_steps(model, data: torch.Tensor, steps: int, batch_size: int, scale_to_symmetric: bool):
    """`steps` training steps over on-device data [N, 784] (uint8), reshuffled per epoch."""
    n = data.shape[0]
    per_epoch = n // batch_size
    perm = torch.randperm(n, device=data.device)
    for i in range(steps):
        if i and i % per_epoch == 0:
            perm = torch.randperm(n, device=data.device)
        j = i % per_epoch
        x = data[perm[j * batch_size:(j + 1) * batch_size]].float() / 255.0
        model.step(x * 2 - 1 if scale_to_symmetric else x)
