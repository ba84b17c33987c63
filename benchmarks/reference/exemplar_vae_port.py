"""A PyTorch port of Exemplar VAE's standard-prior VAE (Norouzi et al. 2020, github.com/sajadn/
Exemplar-VAE, whose code follows VampPrior's), written from their code point by point, to run
beside keras_cvae's `recipes/exemplar_vae.toml` (benchmarks/literature.py drives both).

    .venv-reference/bin/python benchmarks/reference/exemplar_vae_port.py --data D.npz --epochs 50 --seed 0 --output R.json

Point by point, as their code does it:
- encoder: two gated dense layers of 300 (h = (W x + b) ⊙ σ(V x + c)), then a linear mean and a
  log-variance through Hardtanh(−6, 2); decoder: two gated layers of 300 from z = 40, then a
  linear layer and a sigmoid for the Bernoulli means, clamped to [1e-5, 1 − 1e-5];
- every linear layer's weights drawn from N(0, 2 / fan_in) (their `he_init`), biases PyTorch's;
- the KL as the one-sample estimate log q(z | x) − log N(z; 0, I) at the reconstruction's z;
- loss = −log p(x | z) + β·KL, the batch mean; β = epoch / warm-up (1 without one);
- AdamNormGrad: each parameter's gradient divided by (its L2 norm + 1e-7), then Adam (β 0.9,
  0.999, ε 1e-8), lr 5e-4, batch 100, a fresh shuffle and a fresh Bernoulli draw of every
  training batch (dynamic binarization);
- early stopping on the β = 1 validation loss, the patience counted only after the warm-up, the
  best epoch's weights kept; with a patience at least --epochs it only keeps the best epoch;
- the test NLL: for each test image K = 5,000 draws of z in one batch, −log (1/K) Σ exp(−loss_k)
  (the encoder once per image, not on K copies of it: the same q(z | x) at a K-th of the cost).

The data come from --data, an .npz with `train` (grey, [N, 784] in [0, 1]), `validation` and
`test` (binarized, {0, 1}), so that both implementations see the same split and the same test
binarization. Writes --output: the test NLL, the best epoch, the history and seconds per epoch
(the training pass and the validation pass, as a Keras epoch's wall time counts them; the
training pass alone as `train_seconds`).

With --checkpoint the run outlasts a session: after every epoch it writes the weights, the
optimizer, the random state, the best epoch's weights and the patience count there, and the same
command run again goes on from that epoch and stops where an unbroken run would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HIDDEN, LATENT, PIXELS = 300, 40, 784
MIN_PROB = 1e-5
GRADIENT_NORM_EPSILON = 1e-7


class Gated(nn.Module):
    """h = (W x + b) ⊙ σ(V x + c)."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.linear, self.gate = nn.Linear(inputs, outputs), nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.sigmoid(self.gate(x))


class PortVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(Gated(PIXELS, HIDDEN), Gated(HIDDEN, HIDDEN))
        self.z_mean, self.z_log_var = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)
        self.decoder = nn.Sequential(Gated(LATENT, HIDDEN), Gated(HIDDEN, HIDDEN))
        self.x_mean = nn.Linear(HIDDEN, PIXELS)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(0.0, math.sqrt(2.0 / module.in_features))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x)'s mean and its log-variance, bounded to [−6, 2]."""
        h = self.encoder(x)
        return self.z_mean(h), torch.clamp(self.z_log_var(h), -6.0, 2.0)

    def losses(self, x: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: the loss −log p(x|z) + β·KL, the reconstruction log p(x|z) and the KL estimate."""
        return self.losses_at(x, *self.posterior(x), beta)

    def losses_at(self, x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor,
                  beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`losses` for one draw of z per row of `mean`, given q(z | x); x broadcasts against the rows."""
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        probs = torch.clamp(torch.sigmoid(self.x_mean(self.decoder(z))), MIN_PROB, 1.0 - MIN_PROB)
        reconstruction = torch.sum(x * torch.log(probs) + (1.0 - x) * torch.log(1.0 - probs), dim=1)
        log_2_pi = math.log(2.0 * math.pi)
        log_q = torch.sum(-0.5 * (log_var + log_2_pi + (z - mean) ** 2 / torch.exp(log_var)), dim=1)
        log_p = torch.sum(-0.5 * z ** 2 - 0.5 * log_2_pi, dim=1)
        kl = log_q - log_p
        return -reconstruction + beta * kl, reconstruction, kl


class AdamNormGrad(torch.optim.Optimizer):
    """Adam on each parameter's gradient divided by (its L2 norm + 1e-7)."""

    def __init__(self, params, lr: float = 5e-4, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta_1, beta_2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad / (torch.linalg.vector_norm(p.grad) + GRADIENT_NORM_EPSILON)
                state = self.state[p]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                state["m"].mul_(beta_1).add_(grad, alpha=1.0 - beta_1)
                state["v"].mul_(beta_2).addcmul_(grad, grad, value=1.0 - beta_2)
                step_size = group["lr"] * math.sqrt(1.0 - beta_2 ** state["step"]) / (1.0 - beta_1 ** state["step"])
                p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-step_size)


def mean_loss(model: PortVAE, images: torch.Tensor, batch: int = 1000) -> float:
    with torch.no_grad():
        return float(torch.cat([model.losses(images[i:i + batch])[0] for i in range(0, len(images), batch)]).mean())


def test_nll(model: PortVAE, images: torch.Tensor, draws: int) -> float:
    """−mean log (1/K) Σ_k exp(−loss_k): K draws of z for each image in one batch.

    Their code runs the encoder on K copies of the image; here it runs once and its output is
    repeated, which gives the same q(z | x) for a K-th of the cost.
    """
    values = []
    with torch.no_grad():
        for index, image in enumerate(images):
            if index and index % 1000 == 0:
                print(f"  test NLL: {index:,} of {len(images):,} images", flush=True)
            mean, log_var = model.posterior(image[None])
            losses = model.losses_at(image[None], mean.expand(draws, LATENT), log_var.expand(draws, LATENT))[0].double()
            values.append(float(torch.logsumexp(-losses, dim=0)) - math.log(draws))
    return -float(np.mean(values))


def save_checkpoint(path: str, model: PortVAE, optimizer: AdamNormGrad, progress: dict) -> None:
    """Everything the next epoch depends on, written whole or not at all."""
    partial = f"{path}.partial"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                "progress": progress}, partial)
    os.replace(partial, path)


def resume(path: str, model: PortVAE, optimizer: AdamNormGrad) -> dict:
    """Restores what `save_checkpoint` wrote into `model` and `optimizer`; returns the progress."""
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"])
    return saved["progress"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--patience", type=int, help="early stopping after the warm-up (default: --epochs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--test-limit", type=int)
    parser.add_argument("--output", required=True)
    parser.add_argument("--checkpoint", help="resume from this file if it exists, and write it after every epoch")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    data = np.load(args.data)
    train = torch.from_numpy(data["train"].astype(np.float32))
    validation = torch.from_numpy(data["validation"].astype(np.float32))
    test = torch.from_numpy(data["test"][:args.test_limit].astype(np.float32))
    model = PortVAE()
    optimizer = AdamNormGrad(model.parameters())
    patience = args.patience or args.epochs
    progress = {"best": math.inf, "best_epoch": 0, "best_state": None, "waited": 0, "history": []}
    if args.checkpoint and Path(args.checkpoint).exists():
        progress = resume(args.checkpoint, model, optimizer)
        print(f"resumed from {args.checkpoint} after epoch {len(progress['history'])}", flush=True)
    while len(progress["history"]) < args.epochs and progress["waited"] < patience:
        epoch = len(progress["history"]) + 1
        beta = min(1.0, epoch / args.warmup) if args.warmup else 1.0
        start = time.perf_counter()
        model.train()
        for indices in torch.randperm(len(train)).split(100):
            loss = model.losses(torch.bernoulli(train[indices]), beta)[0].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_seconds = time.perf_counter() - start
        model.eval()
        val_loss = mean_loss(model, validation)
        seconds = time.perf_counter() - start  # the training pass and validation, as a Keras epoch
        progress["history"].append({"epoch": epoch, "val_loss": val_loss, "seconds": seconds,
                                    "train_seconds": train_seconds})
        print(f"epoch {epoch}: validation loss {val_loss:.2f} ({seconds:.1f} s)", flush=True)
        if epoch > args.warmup:
            if val_loss < progress["best"]:
                progress.update(best=val_loss, best_epoch=epoch, waited=0,
                                best_state={k: v.clone() for k, v in model.state_dict().items()})
            else:
                progress["waited"] += 1
        if args.checkpoint:
            save_checkpoint(args.checkpoint, model, optimizer, progress)
    best, best_epoch, best_state, history = (progress[k] for k in ("best", "best_epoch", "best_state", "history"))
    if best_state is not None:  # None only where the run ended inside its warm-up
        model.load_state_dict(best_state)
    print(f"trained {len(history)} epochs, best epoch {best_epoch}; its test NLL, "
          f"K={args.iw_samples} on {len(test):,} images", flush=True)
    start = time.perf_counter()
    nll = test_nll(model, test, args.iw_samples)
    result = {"test_nll": nll, "best_epoch": best_epoch, "best_val_loss": best, "epochs": len(history),
              "seconds_per_epoch": float(np.mean([row["seconds"] for row in history])),
              "evaluate_seconds": time.perf_counter() - start, "history": history, "seed": args.seed,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"test NLL {nll:.2f} (K={args.iw_samples}, best epoch {best_epoch})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
