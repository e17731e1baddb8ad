"""The training loop: RAdam in Lookahead, L2 on conv/dense weights, checkpoint chosen on validation.

Labels are (N, 2) integer arrays of [CLASS, LEVEL] values; heads map them to class indices.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fmri_edge import scoring
from fmri_edge.training.model import SEResCNN, build_model
from fmri_edge.training.recipe import Recipe

HEAD_COLUMN = {"class": 0, "level": 1}
HEAD_OFFSET = {"class": 1, "level": 4}  # value → index


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any optimizer: every k steps the slow weights move
    a fraction alpha toward the fast ones and the fast weights restart from there."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5):
        self.optimizer, self.k, self.alpha, self.steps = optimizer, k, alpha, 0
        self.slow = [[p.detach().clone() for p in g["params"]] for g in optimizer.param_groups]

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self):
        self.optimizer.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for group, slow in zip(self.optimizer.param_groups, self.slow):
                for p, s in zip(group["params"], slow):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)


@dataclass
class FitResult:
    model: SEResCNN
    best_epoch: int                      # 1-based epoch of the kept checkpoint
    val_metric: float | None = None      # validation metric of the kept checkpoint (lower is better)
    history: list = field(default_factory=list)  # per epoch: train loss, val metrics


def targets(labels: np.ndarray, heads: dict) -> dict[str, torch.Tensor]:
    return {t: torch.as_tensor(labels[:, HEAD_COLUMN[t]] + HEAD_OFFSET[t], dtype=torch.long) for t in heads}


@torch.inference_mode()
def predict_proba(model: SEResCNN, trials: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    model.eval()
    out: dict[str, list] = {t: [] for t in model.cfg.heads}
    for i in range(0, len(trials), batch):
        logits = model(torch.as_tensor(trials[i:i + batch], dtype=torch.float32))
        for t, lg in model.split_heads(logits).items():
            out[t].append(torch.softmax(lg, dim=1).numpy())
    return {t: np.concatenate(v) for t, v in out.items()}


def decide(probs: dict[str, np.ndarray], level_rule: str = "argmax") -> dict[str, np.ndarray]:
    """Class and level answers from head probabilities; a missing head gives no answer."""
    out = {}
    if "class" in probs:
        out["class"] = scoring.decide_class(probs["class"])
    if "level" in probs:
        out["level"] = scoring.decide_level(probs["level"], level_rule)
    return out


def selection_metric(probs: dict[str, np.ndarray], labels: np.ndarray, level_rule: str) -> float:
    """Lower is better: the challenge Score, or the error of the only head there is."""
    d = decide(probs, level_rule)
    if "class" in d and "level" in d:
        return scoring.challenge_score(d["class"], labels[:, 0], d["level"], labels[:, 1])["Score"]
    if "class" in d:
        return scoring.class_error(d["class"], labels[:, 0])
    return scoring.level_error(d["level"], labels[:, 1])


def _augment(x0: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    a = recipe.augment
    if a.max_shift > 0:
        shift = int(torch.randint(-a.max_shift, a.max_shift + 1, (1,), generator=gen))
        x0 = torch.roll(x0, shifts=shift, dims=2)
    if a.noise_std > 0:
        sd = x0.std(dim=(1, 2), keepdim=True)
        x0 = x0 + a.noise_std * sd * torch.randn(x0.shape, generator=gen)
    return x0


def _param_groups(model: SEResCNN, optim) -> list[dict]:
    """L2 on conv and dense weights only (the paper's kernel regularizer), as RAdam weight decay:
    the gradient of l2·Σw² is 2·l2·w. The input SE block may get its own lr and no L2
    (``input_se_lr_mult``), so that its per-region weights can move away from their initial values."""
    own = set(map(id, model.input_se.parameters())) if model.input_se is not None and \
        optim.input_se_lr_mult != 1 else set()
    decay, rest = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if id(p) in own:
                continue
            (decay if name == "weight" and isinstance(m, (nn.Conv1d, nn.Linear)) else rest).append(p)
    groups = [{"params": decay, "weight_decay": 2 * optim.l2}, {"params": rest, "weight_decay": 0.0}]
    if own:
        groups.append({"params": list(model.input_se.parameters()), "weight_decay": 0.0,
                       "lr": optim.lr * optim.input_se_lr_mult})
    return groups


def fit(recipe: Recipe, trials: np.ndarray, labels: np.ndarray,
        val_trials: np.ndarray | None = None, val_labels: np.ndarray | None = None,
        epochs: int | None = None, seed: int | None = None,
        on_epoch: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train one network. With validation data the checkpoint with the best validation metric is
    kept; without, the weights after ``epochs`` epochs."""
    seed = recipe.seed if seed is None else seed
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(recipe.model)
    o = recipe.optim
    opt = Lookahead(torch.optim.RAdam(_param_groups(model, o), lr=o.lr), o.lookahead_k, o.lookahead_alpha)
    x_all = torch.as_tensor(trials, dtype=torch.float32)
    y_all = targets(labels, recipe.model.heads)
    weights = {t: (o.level_loss_weight if t == "level" else 1.0) for t in recipe.model.heads}
    n, epochs = len(x_all), epochs or o.epochs
    best = (np.inf, np.inf, 0, None)  # metric, val loss, epoch, state
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, o.batch_size):
            idx = perm[i:i + o.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            x0 = _augment(model.normalize(x_all[idx]), recipe, gen)
            ys = {t: F.one_hot(y[idx], recipe.model.heads[t]).float() for t, y in y_all.items()}
            if recipe.augment.mixup_alpha > 0:
                lam = float(np.random.default_rng(seed * 100_003 + epoch * 1009 + i).beta(
                    recipe.augment.mixup_alpha, recipe.augment.mixup_alpha))
                j = torch.randperm(len(idx), generator=gen)
                x0 = lam * x0 + (1 - lam) * x0[j]
                ys = {t: lam * y + (1 - lam) * y[j] for t, y in ys.items()}
            logits = model.split_heads(model.forward_normalized(x0))
            loss = sum(weights[t] * F.cross_entropy(logits[t], ys[t]) for t in logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / n}
        if val_trials is not None:
            probs = predict_proba(model, val_trials)
            row["val_metric"] = selection_metric(probs, val_labels, recipe.eval.level_rule)
            vy = targets(val_labels, recipe.model.heads)
            row["val_loss"] = float(sum(weights[t] * F.cross_entropy(torch.log(torch.as_tensor(p) + 1e-9), vy[t])
                                        for t, p in probs.items()))
            if (row["val_metric"], row["val_loss"]) < best[:2]:
                best = (row["val_metric"], row["val_loss"], epoch, copy.deepcopy(model.state_dict()))
        history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
    if best[3] is not None:
        model.load_state_dict(best[3])
        best_epoch, val_metric = best[2], float(best[0])
    else:
        best_epoch, val_metric = epochs, None
    model.eval()
    return FitResult(model, best_epoch, val_metric=val_metric, history=history)


def save_checkpoint(model: SEResCNN, path, **extra) -> None:
    """State dict plus the plain-data config needed to rebuild the model (weights_only-safe)."""
    torch.save({"model_config": model.cfg.to_dict(), "state_dict": model.state_dict(), **extra}, path)


def load_checkpoint(path) -> tuple[SEResCNN, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
