"""The seed BiGAN program, as it is: Papers-in-100-Lines-of-Code,
`Adversarial_Feature_Learning/adversarial_feature_learning.py` (github.com/MaximeVandegar/
Papers-in-100-Lines-of-Code, commit e48fa5d).

Its networks, objective, optimisers and scheduler are written here as that file has them, so
that tests/test_torch_reference.py can check aaejax's `seed` BiGAN against it step for step and
`make bench` can time it. Only the data access is separated out (the program draws
`randperm(60000)[:128]` of its global trainX itself): `train_step` takes the batch and z, so the
test can feed both programs the same ones.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class G(nn.Module):

    def __init__(self):
        super(G, self).__init__()
        self.network = nn.Sequential(nn.Linear(50, 1024), nn.ReLU(),
                                     nn.Linear(1024, 1024), nn.BatchNorm1d(1024, eps=1e-05, momentum=0.1, affine=False),
                                     nn.ReLU(), nn.Linear(1024, 784), nn.Sigmoid())

    def forward(self, x):
        return self.network(x)


class E(nn.Module):

    def __init__(self):
        super(E, self).__init__()
        self.network = nn.Sequential(nn.Linear(784, 1024), nn.LeakyReLU(0.2),
                                     nn.Linear(1024, 1024), nn.BatchNorm1d(1024, eps=1e-05, momentum=0.1, affine=False),
                                     nn.LeakyReLU(0.2), nn.Linear(1024, 50), nn.Sigmoid())

    def forward(self, x):
        return self.network(x)


class D(nn.Module):

    def __init__(self):
        super(D, self).__init__()
        self.network = nn.Sequential(nn.Linear(784 + 50, 1024), nn.LeakyReLU(0.2),
                                     nn.Linear(1024, 1024), nn.BatchNorm1d(1024, eps=1e-05, momentum=0.1, affine=False),
                                     nn.LeakyReLU(0.2), nn.Linear(1024, 1), nn.Sigmoid())

    def forward(self, x, z):
        return self.network(torch.cat((z, x), dim=1))


def make_optimizers(g, e, d):
    """The program's optimisers and schedulers (its __main__)."""
    optimizers = [torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=2.5e-5, maximize=True),
                  torch.optim.Adam(e.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=2.5e-5, maximize=True),
                  torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=2.5e-5, maximize=False)]
    schedulers = [torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9999508793911394) for optimizer in optimizers]
    return optimizers, schedulers


def train_step(D, G, E, optimizers, schedulers, x, z, epoch, batch_size=128, nb_epochs=187500, device="cpu"):
    """One iteration of the program's `train` loop (its `epoch` counts iterations) on the given
    minibatch x [128, 784] in [0, 1] and latent sample z [128, 50] in [0, 1)."""
    lambda_objective = torch.nn.BCELoss()(D(G(z), z).reshape(batch_size), torch.ones(batch_size, device=device)) + \
                       torch.nn.BCELoss()(D(x, E(x)).reshape(batch_size), torch.zeros(batch_size, device=device))

    for optimizer in optimizers:
        optimizer.zero_grad()
    lambda_objective.backward()
    for optimizer in optimizers:
        optimizer.step()

    if epoch > (nb_epochs / 2):
        for scheduler in schedulers:
            scheduler.step()
    return lambda_objective


def program_batch(train_x, batch_size=128, device="cpu"):
    """The program's own data access: `get_minibatch` draws randperm(N)[:128] of trainX (here
    `train_x`, float [N, 784] in [0, 1] on the device), then `sample_latent` torch.rand(128, 50)."""
    indices = torch.randperm(train_x.shape[0], device=device)[:batch_size]
    return train_x[indices], torch.rand((batch_size, 50), device=device)


def program_step(nets, optimizers, schedulers, train_x, epoch, batch_size=128, device="cpu"):
    """One iteration on a `program_batch`. For `make bench`."""
    x, z = program_batch(train_x, batch_size, device)
    return train_step(nets["D"], nets["G"], nets["E"], optimizers, schedulers, x, z, epoch, batch_size, device=device)


def build(device="cpu"):
    """(nets {"G", "E", "D"}, optimizers, schedulers) as the program's __main__ builds them."""
    nets = {"G": G().to(device), "E": E().to(device), "D": D().to(device)}
    optimizers, schedulers = make_optimizers(nets["G"], nets["E"], nets["D"])
    return nets, optimizers, schedulers


def main(argv=None) -> None:
    """`python -m tests.references.torch_bigan [--iterations=N] [--seed=S] [--every=K]`: the program's
    training loop on MNIST (one CPU thread), printing every K iterations a JSON line with its
    objective (D's BCE) and D's mean outputs on that iteration's batch, in training mode as the
    program calls D. To set the program's dynamics beside a `seed` run's metrics.jsonl."""
    import argparse
    import json

    import numpy as np

    from aaejax.data import datasets

    parser = argparse.ArgumentParser(prog="python -m tests.references.torch_bigan")
    parser.add_argument("--iterations", type=int, default=2340)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=117)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    train_x = torch.from_numpy(datasets.load("mnist").train_images.reshape(-1, 784).astype(np.float32) / 255.0)
    nets, optimizers, schedulers = build()
    for it in range(1, args.iterations + 1):
        x, z = program_batch(train_x)
        objective = train_step(nets["D"], nets["G"], nets["E"], optimizers, schedulers, x, z, it)
        if it % args.every == 0:
            with torch.no_grad():
                d_gz, d_xe = nets["D"](nets["G"](z), z).mean().item(), nets["D"](x, nets["E"](x)).mean().item()
            # Ours labels (x, E(x)) real: d_real = 1 - D(x, E(x)), d_fake = 1 - D(G(z), z).
            print(json.dumps({"iteration": it, "objective": round(objective.item(), 4), "d_real": round(1 - d_xe, 4),
                              "d_fake": round(1 - d_gz, 4)}), flush=True)


if __name__ == "__main__":
    main()
