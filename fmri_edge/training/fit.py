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

from fmri_edge import valence
from fmri_edge.evaluation import scoring
from fmri_edge.model.normalize import align_stats_by_participant
from fmri_edge.training.model import ValenceNet, build_model
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
    model: ValenceNet
    best_epoch: int  # 1-based epoch of the kept checkpoint
    val_metric: float | None = None  # validation metric of the kept checkpoint (lower is better)
    history: list = field(default_factory=list)  # per epoch: train loss, val metrics
    states: list | None = None  # per epoch: the weights (only with ``keep_states``)


def targets(labels: np.ndarray, heads: dict) -> dict[str, torch.Tensor]:
    return {
        t: torch.as_tensor(labels[:, HEAD_COLUMN[t]] + HEAD_OFFSET[t], dtype=torch.long)
        for t in heads
    }


@torch.inference_mode()
def _normalized(model: ValenceNet, trials: np.ndarray, batch: int = 1024) -> torch.Tensor:
    if not len(trials):
        return torch.zeros((0, model.cfg.seen_regions(), model.cfg.seen_times()))
    return torch.cat(
        [
            model.normalize(torch.as_tensor(trials[i : i + batch], dtype=torch.float32))
            for i in range(0, len(trials), batch)
        ]
    )


@torch.inference_mode()
def represent(
    model: ValenceNet,
    trials: np.ndarray,
    participants: np.ndarray | None = None,
    pool: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.Tensor:
    """Trials → the aligned representation the network reads (N, C, T'). Each participant is
    aligned over its own trials in ``trials`` (:class:`fmri_edge.model.normalize.AlignStats`, the same
    computation ``predict`` runs) or, with ``pool`` = (trials, participants), over all of its
    trials there (no labels: e.g. a whole subject folder when only some of its trials are scored);
    without ``participants``, with the training population's statistics (the graph's defaults)."""
    x0 = _normalized(model, trials)
    if model.cfg.subject_align == "none":
        return x0
    if participants is None:
        return model.align(x0)
    stats = (
        align_stats_by_participant(x0.numpy(), participants)
        if pool is None
        else align_stats_by_participant(_normalized(model, pool[0]).numpy(), pool[1])
    )
    mean = np.stack([stats[q][0] for q in participants])
    scale = np.stack([stats[q][1] for q in participants])
    return model.align(x0, torch.from_numpy(mean), torch.from_numpy(scale))


NEUTRAL_SCALE = 1e30  # a default alignment scale that makes a representation entry's z-score 0


def set_population_stats(model: ValenceNet, trials: np.ndarray, participants: np.ndarray) -> None:
    """The graph's default alignment statistics: the average over the training participants of
    their own means and scales (used when a participant has too few trials to align), except a
    ``trial_level`` step, made neutral (scale :data:`NEUTRAL_SCALE`)."""
    if model.cfg.subject_align == "none":
        return
    with torch.inference_mode():
        stats = align_stats_by_participant(_normalized(model, trials).numpy(), participants)
    model.pop_mean.copy_(torch.from_numpy(np.mean([m for m, _ in stats.values()], axis=0)))
    model.pop_scale.copy_(torch.from_numpy(np.mean([sc for _, sc in stats.values()], axis=0)))
    if model.cfg.trial_level:
        # the sustained level only means something against the participant's own trials (raw BOLD
        # gains differ between scanners and people): without them it is neutral, its z-score 0
        model.pop_scale[:, -1] = NEUTRAL_SCALE


def set_level_given_class(model: ValenceNet, labels: np.ndarray, prior: float = 0.5) -> None:
    """P(LEVEL | CLASS) from the training labels (each count + ``prior``), so that a class-only
    model's LEVEL answer can minimize the expected LEVEL error (the Score-optimal answer)."""
    counts = (
        np.array(
            [
                [np.sum((labels[:, 0] == c) & (labels[:, 1] == lvl)) for lvl in range(-4, 5)]
                for c in (-1, 0, 1)
            ],
            dtype=np.float64,
        )
        + prior
    )
    model.level_given_class.copy_(
        torch.as_tensor(counts / counts.sum(axis=1, keepdims=True), dtype=torch.float32)
    )


@torch.inference_mode()
def predict_proba(
    model: ValenceNet,
    trials: np.ndarray,
    participants: np.ndarray | None = None,
    batch: int = 512,
    pool: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    model.eval()
    z = represent(model, trials, participants, pool)
    out: dict[str, list] = {t: [] for t in model.cfg.heads}
    for i in range(0, len(z), batch):
        logits = model.forward_normalized(z[i : i + batch])
        for t, lg in model.split_heads(logits).items():
            out[t].append(torch.softmax(lg, dim=1).numpy())
    probs = {t: np.concatenate(v) for t, v in out.items()}
    if "class" in probs:  # LEVEL probabilities implied by CLASS: what the graph's level_probs holds
        probs["level_mix"] = probs["class"] @ model.level_given_class.numpy()
    return probs


def decide(probs: dict[str, np.ndarray], level_rule: str = "argmax") -> dict[str, np.ndarray]:
    """Class and level answers from head probabilities; a missing head gives no answer."""
    out = {}
    if "class" in probs:
        out["class"] = valence.decide_class(probs["class"])
    if "level" in probs:
        out["level"] = valence.decide_level(probs["level"], level_rule)
    elif "level_mix" in probs and level_rule == "min_expected_error":
        # class-only model: the LEVEL with least expected error under Σ_c p(c | x) P(LEVEL | c),
        # which with argmax CLASS minimizes the expected challenge Score
        out["level"] = valence.decide_level(probs["level_mix"], "min_expected_error")
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


def _param_groups(model: ValenceNet, optim) -> list[dict]:
    """L2 on conv and dense weights only (the paper's kernel regularizer), as RAdam weight decay:
    the gradient of l2·Σw² is 2·l2·w. The input SE block may get its own lr and no L2
    (``input_se_lr_mult``), so that its per-region weights can move away from their initial values."""
    own = (
        set(map(id, model.input_se.parameters()))
        if model.input_se is not None and optim.input_se_lr_mult != 1
        else set()
    )
    decay, rest = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if id(p) in own:
                continue
            (decay if name == "weight" and isinstance(m, (nn.Conv1d, nn.Linear)) else rest).append(
                p
            )
    groups = [
        {"params": decay, "weight_decay": 2 * optim.l2},
        {"params": rest, "weight_decay": 0.0},
    ]
    if own:
        groups.append(
            {
                "params": list(model.input_se.parameters()),
                "weight_decay": 0.0,
                "lr": optim.lr * optim.input_se_lr_mult,
            }
        )
    return groups


def fit(
    recipe: Recipe,
    trials: np.ndarray,
    labels: np.ndarray,
    val_trials: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    participants: np.ndarray | None = None,
    val_participants: np.ndarray | None = None,
    pool: tuple[np.ndarray, np.ndarray] | None = None,
    keep_states: bool = False,
) -> FitResult:
    """Train one network. With validation data the checkpoint with the best validation metric is
    kept; without, the weights after ``epochs`` epochs. ``participants`` (one id per trial) is
    needed by models with subject alignment: each participant is aligned over its own trials,
    training and validation alike (without it, all trials count as one participant), or over all
    of its trials in ``pool`` (see :func:`represent`). ``keep_states`` keeps every epoch's weights
    (for :func:`common_checkpoint`; meant for small models)."""
    seed = recipe.seed if seed is None else seed
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(recipe.model)
    if participants is None:
        participants = np.zeros(len(trials), dtype=int)
    if val_trials is not None and val_participants is None:
        val_participants = np.zeros(len(val_trials), dtype=int)
    set_population_stats(model, trials, participants)
    set_level_given_class(model, labels)
    o = recipe.optim
    if o.solver == "lbfgs":
        res = _fit_lbfgs(
            model,
            recipe,
            represent(model, trials, participants, pool).clone(),
            labels,
            val_trials,
            val_labels,
            val_participants,
            pool,
        )
        if on_epoch:  # the converged fit is the whole fit: reported as its last epoch (progress counts it done)
            on_epoch(max(1, o.epochs or 1), res.history[-1])
        return res
    if o.solver != "radam":
        raise ValueError(f"unknown solver {o.solver!r}; choose 'radam' or 'lbfgs'")
    opt = Lookahead(
        torch.optim.RAdam(_param_groups(model, o), lr=o.lr), o.lookahead_k, o.lookahead_alpha
    )
    z_all = represent(model, trials, participants, pool).clone()  # normalization has no parameters
    y_all = targets(labels, recipe.model.heads)
    weights = {t: (o.level_loss_weight if t == "level" else 1.0) for t in recipe.model.heads}
    n, epochs = len(z_all), epochs or o.epochs
    if recipe.eval.checkpoint_on not in ("metric", "loss", "ensemble"):
        raise ValueError(
            f"unknown checkpoint_on {recipe.eval.checkpoint_on!r}; choose 'metric', 'loss' or 'ensemble'"
        )
    states = [] if keep_states else None
    best = (np.inf, np.inf, 0, None, None)  # selection key (2), epoch, state, val metric
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, o.batch_size):
            idx = perm[i : i + o.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            x0 = _augment(z_all[idx], recipe, gen)
            ys = {t: F.one_hot(y[idx], recipe.model.heads[t]).float() for t, y in y_all.items()}
            if recipe.augment.mixup_alpha > 0:
                lam = float(
                    np.random.default_rng(seed * 100_003 + epoch * 1009 + i).beta(
                        recipe.augment.mixup_alpha, recipe.augment.mixup_alpha
                    )
                )
                j = torch.randperm(len(idx), generator=gen)
                x0 = lam * x0 + (1 - lam) * x0[j]
                ys = {t: lam * y + (1 - lam) * y[j] for t, y in ys.items()}
            if o.label_smoothing > 0:
                ys = {
                    t: (1 - o.label_smoothing) * y + o.label_smoothing / y.shape[1]
                    for t, y in ys.items()
                }
            logits = model.split_heads(model.forward_normalized(x0))
            loss = sum(weights[t] * F.cross_entropy(logits[t], ys[t]) for t in logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / n}
        if val_trials is not None:
            probs = predict_proba(model, val_trials, val_participants, pool=pool)
            row["val_metric"] = selection_metric(probs, val_labels, recipe.eval.level_rule)
            vy = targets(val_labels, recipe.model.heads)
            row["val_loss"] = float(
                sum(
                    weights[t] * F.cross_entropy(torch.log(torch.as_tensor(probs[t]) + 1e-9), vy[t])
                    for t in recipe.model.heads
                )
            )
            key = (
                (row["val_loss"], row["val_metric"])
                if recipe.eval.checkpoint_on == "loss"
                else (row["val_metric"], row["val_loss"])
            )
            if key < best[:2]:
                best = (*key, epoch, copy.deepcopy(model.state_dict()), row["val_metric"])
        history.append(row)
        if states is not None:
            states.append(copy.deepcopy(model.state_dict()))
        if on_epoch:
            on_epoch(epoch, row)
    if best[3] is not None:
        model.load_state_dict(best[3])
        best_epoch, val_metric = best[2], float(best[4])
    else:
        best_epoch, val_metric = epochs, None
    model.eval()
    return FitResult(model, best_epoch, val_metric=val_metric, history=history, states=states)


def _fit_lbfgs(
    model: ValenceNet,
    recipe: Recipe,
    z: torch.Tensor,
    labels: np.ndarray,
    val_trials,
    val_labels,
    val_participants,
    pool,
) -> FitResult:
    """A linear model fitted to convergence: minimize C·Σ cross-entropy + ½‖W‖² over all trials at
    once with L-BFGS (strong Wolfe line search) in float64, from zero weights — scikit-learn's
    ``LogisticRegression(C)`` (multinomial, lbfgs) for every head. Deterministic; the validation
    data, if any, is only scored."""
    o = recipe.optim
    if recipe.model.kind != "linear":
        raise ValueError(
            f"solver 'lbfgs' fits kind = \"linear\" models only, not {recipe.model.kind!r}"
        )
    layer = model.final_layer
    w = torch.zeros(layer.weight.shape, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(layer.bias.shape, dtype=torch.float64, requires_grad=True)
    model.eval()  # the features as the graph computes them (no dropout)
    x = model.forward_features(z).double()
    y = targets(labels, recipe.model.heads)
    sizes = list(recipe.model.heads.values())
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=o.max_iter,
        history_size=20,
        tolerance_grad=1e-8,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def log_loss(reduction):
        logits = torch.split(torch.addmm(b, x, w.t()), sizes, dim=1)
        return sum(F.cross_entropy(lg, y[t], reduction=reduction) for lg, t in zip(logits, y))

    def objective():
        opt.zero_grad()
        loss = o.C * log_loss("sum") + 0.5 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    n_iter = int(opt.state[w]["n_iter"])
    with torch.no_grad():
        layer.weight.copy_(w.float())
        layer.bias.copy_(b.float())
        grad = float(torch.cat([w.grad.flatten(), b.grad.flatten()]).abs().max())
        mean_ce = float(log_loss("mean"))
    row = {"epoch": 1, "train_loss": mean_ce, "iterations": n_iter, "max_abs_grad": grad}
    if n_iter >= o.max_iter:
        row["warning"] = f"L-BFGS stopped at max_iter={o.max_iter} before converging"
    val_metric = None
    if val_trials is not None:
        probs = predict_proba(model, val_trials, val_participants, pool=pool)
        val_metric = row["val_metric"] = selection_metric(probs, val_labels, recipe.eval.level_rule)
    return FitResult(model, 1, val_metric=val_metric, history=[row])


def common_checkpoint(fits: list[FitResult]) -> int:
    """One checkpoint epoch for all networks of an ensemble (each fitted with ``keep_states``): the
    epoch with the lowest validation metric averaged over the networks (ties: the lowest mean
    validation loss), i.e. chosen on all their validation trials together instead of each network
    on its own small group. Every network is set to its weights of that epoch, ``val_metric`` and
    ``best_epoch`` follow; returns the 1-based epoch."""
    metric = np.mean([[h["val_metric"] for h in f.history] for f in fits], axis=0)
    loss = np.mean([[h["val_loss"] for h in f.history] for f in fits], axis=0)
    e = min(range(len(metric)), key=lambda i: (metric[i], loss[i]))
    for f in fits:
        f.model.load_state_dict(f.states[e])
        f.model.eval()
        f.best_epoch, f.val_metric, f.states = e + 1, float(f.history[e]["val_metric"]), None
    return e + 1


def save_checkpoint(model: ValenceNet, path, **extra) -> None:
    """State dict plus the plain-data config needed to rebuild the model (weights_only-safe), and
    the fmri-edge version that wrote it (named when another version cannot read it)."""
    import fmri_edge

    torch.save(
        {
            "model_config": model.cfg.to_dict(),
            "state_dict": model.state_dict(),
            "fmri_edge_version": fmri_edge.__version__,
            **extra,
        },
        path,
    )


def load_checkpoint(path) -> tuple[ValenceNet, dict]:
    """A checkpoint of :func:`save_checkpoint`, or one :class:`InputError` naming the file and what
    is wrong (cut short, not a checkpoint, written by a version whose config this one does not know)."""
    from fmri_edge.training.checkpoint_errors import read_checkpoint

    return read_checkpoint(path, build_model)
