"""Time one training step of the benchmark models in PyTorch.

The reference for `admm-bench`'s framework benchmark: the same models,
batch sizes, optimizers and thread counts as the Rust side, on the CPU.
Prints one JSON object with the median step time in seconds.

    python step.py --model mlp --threads 2 --steps 200
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F


def mlp_step_function():
    """Build the 784-256-10 MLP with Adam and return a step on a fixed batch of 128."""
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs = torch.randn(128, 784)
    targets = torch.randint(0, 10, (128,))

    def step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()

    return step


def generator(latent, filters):
    """DCGAN generator: latent noise [B, L] to 1x28x28 images in [-1, 1]."""
    return nn.Sequential(
        nn.Unflatten(1, (latent, 1, 1)),
        nn.ConvTranspose2d(latent, 2 * filters, 7, 1, 0, bias=False),
        nn.BatchNorm2d(2 * filters),
        nn.ReLU(),
        nn.ConvTranspose2d(2 * filters, filters, 4, 2, 1, bias=False),
        nn.BatchNorm2d(filters),
        nn.ReLU(),
        nn.ConvTranspose2d(filters, 1, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


def discriminator(filters):
    """DCGAN discriminator: 1x28x28 images to one logit each."""
    return nn.Sequential(
        nn.Conv2d(1, filters, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(filters, 2 * filters, 4, 2, 1, bias=False),
        nn.BatchNorm2d(2 * filters),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * filters, 1, 7, 1, 0, bias=False),
        nn.Flatten(0),
    )


def dcgan_step_function(latent=64, filters=32, batch=64):
    """Build the DCGAN pair and return one D step plus one G step on a fixed real batch."""
    gen = generator(latent, filters).train()
    disc = discriminator(filters).train()
    betas = (0.5, 0.999)
    gen_optimizer = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=betas)
    disc_optimizer = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=betas)
    real = torch.rand(batch, 1, 28, 28) * 2 - 1
    ones = torch.ones(batch)
    zeros = torch.zeros(batch)

    def step():
        fake = gen(torch.randn(batch, latent))
        disc_optimizer.zero_grad()
        disc_loss = F.binary_cross_entropy_with_logits(
            disc(real), ones
        ) + F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
        disc_loss.backward()
        disc_optimizer.step()

        gen_optimizer.zero_grad()
        gen_loss = F.binary_cross_entropy_with_logits(disc(fake), ones)
        gen_loss.backward()
        gen_optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "dcgan"], required=True)
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads")
    parser.add_argument("--steps", type=int, default=100, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    step = mlp_step_function() if args.model == "mlp" else dcgan_step_function()
    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "model": args.model,
                "threads": args.threads,
                "steps": args.steps,
                "median_seconds": statistics.median(seconds),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
