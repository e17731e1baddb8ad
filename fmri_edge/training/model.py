"""SE residual 1-D CNN for valence decoding from region-wise fMRI.

Lin & Lee, "Predicting emotions using channel attention mechanism on fMRI signal data"
(ICBHI 2024 challenge). A squeeze-and-excitation (SE) block on the input learns one weight per
brain region (channel); a three-stage residual 1-D CNN with SE after every convolution and a
dense head follow. Ablations from the paper: ``se=False`` ("vanilla") and a region subset
("EBR": emotion-related regions only).

Shapes: trials are (B, n_regions, n_times) — regions are the channels, time is the length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


EPS = 1e-6


def _minmax_trial(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Paper Eq. 1: min-max to [0, 1] over the whole trial (all regions and seconds)."""
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    return (x - lo) / (hi - lo + EPS)


def _zscore_region(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Each region z-scored over the trial's seconds."""
    mu = x.mean(dim=2, keepdim=True)
    sd = ((x - mu) ** 2).mean(dim=2, keepdim=True).sqrt()
    return (x - mu) / (sd + EPS)


def _baseline_psc(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Percent signal change of each region against its fixation baseline (first seconds)."""
    base = x[:, :, :baseline_s].mean(dim=2, keepdim=True)
    return 100.0 * (x - base) / (base.abs() + EPS)


def _baseline_z(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Each region minus its fixation baseline, divided by its standard deviation over the trial."""
    base = x[:, :, :baseline_s].mean(dim=2, keepdim=True)
    mu = x.mean(dim=2, keepdim=True)
    sd = ((x - mu) ** 2).mean(dim=2, keepdim=True).sqrt()
    return (x - base) / (sd + EPS)


def _baseline_sub(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Each region minus its fixation baseline, no rescaling (pairs with subject-wise scaling)."""
    return x - x[:, :, :baseline_s].mean(dim=2, keepdim=True)


def _psc_mean(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Percent signal change of each region against its own mean over the trial's seconds:
    keeps the response amplitude (a z-score divides it away) and removes the region's level."""
    mu = x.mean(dim=2, keepdim=True)
    return 100.0 * (x - mu) / (mu.abs() + EPS)


def _psc_mean_gsr(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """``psc_mean``, then the global signal removed: at every second, the mean over all regions
    subtracted (a response shared by the whole brain, e.g. arousal or breathing, cancels)."""
    p = _psc_mean(x, baseline_s)
    return p - p.mean(dim=1, keepdim=True)


def _minmax_region(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Each region min-maxed to [0, 1] over the trial's seconds (the paper's Eq. 1 per feature,
    as its text motivates it: 'the values of different features similar')."""
    lo = x.amin(dim=2, keepdim=True)
    hi = x.amax(dim=2, keepdim=True)
    return (x - lo) / (hi - lo + EPS)


def _center_region(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Each region minus its mean over the trial's seconds, no rescaling."""
    return x - x.mean(dim=2, keepdim=True)


TRIAL_NORMALIZATIONS = {
    "baseline_sub": _baseline_sub,
    "center_region": _center_region,
    "minmax_trial": _minmax_trial,
    "minmax_region": _minmax_region,
    "psc_mean": _psc_mean,
    "psc_mean_gsr": _psc_mean_gsr,
    "zscore_region": _zscore_region,
    "baseline_psc": _baseline_psc,
    "baseline_z": _baseline_z,
    "none": lambda x, baseline_s: x,
}


class SqueezeExcite(nn.Module):
    """Channel attention: mean over time → reduce → ReLU → expand → sigmoid → gate."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16):
        super().__init__()
        rd = max(int(channels * rd_ratio), 1)
        self.fc1 = nn.Linear(channels, rd)
        self.fc2 = nn.Linear(rd, channels)

    def weights(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C)
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=2)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x).unsqueeze(2)


def _conv_se_bn(c_in: int, c_out: int, relu: bool, se: bool) -> nn.Sequential:
    """BN(SE(act(Conv1d(x)))) with 'same' padding, the paper's building unit."""
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, kernel_size=3, padding=1)]
    if relu:
        layers.append(nn.ReLU())
    if se:
        layers.append(SqueezeExcite(c_out))
    layers.append(nn.BatchNorm1d(c_out))
    return nn.Sequential(*layers)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (stored in every checkpoint)."""

    n_regions: int = 246  # channels of the input the model sees
    n_times: int = 25  # seconds per trial (1 sample/s)
    heads: dict = field(default_factory=lambda: {"class": 3})  # task -> n_outputs
    kind: str = "cnn"  # "cnn": the SE residual CNN; "linear": one linear layer (baseline)
    se: bool = True  # False = the paper's "vanilla" ablation
    region_idx: list | None = None  # EBR: indices into the 246 input regions
    normalization: str = "minmax_trial"  # per-trial normalization inside the graph
    baseline_s: int = 5  # fixation seconds at the start of a trial
    dropout: float = 0.0  # before the dense head (not in the paper)
    widths: tuple = (32, 64, 128)
    dense: tuple = (512, 100)
    # seconds [start, stop) kept after normalization (input stays n_times long); None = all
    time_window: list | None = None
    # average the kept seconds into this many equal bins before the network (None = every second)
    time_bins: int | None = None
    # CNN head: average the last block's output into this many time bins before the dense layers
    # (None = the paper's flatten of every second: 128 × T inputs to the first dense layer)
    head_pool: int | None = None
    # subject alignment INSIDE the graph, after the per-trial step: each participant's
    # representation minus its mean over that participant's own trials ("center"), also divided by
    # its std ("zscore"); statistics are graph inputs with the training population's as defaults
    subject_align: str = "none"
    # subject-wise normalization applied OUTSIDE the graph, per participant over all its trials,
    # by fmri_edge.model.normalize.subject_normalize (numpy): "none" | "zscore" | "center"
    subject_norm: str = "none"
    # kind = "lowrank": temporal filters of the representation (T' → rank), then one linear layer
    # over regions × rank (a rank-limited linear model: every class weight map is a sum of
    # ``rank`` region patterns times a shared time course)
    rank: int = 2
    # kind = "linear": append each region's sustained level — log |mean raw BOLD| over the
    # time window — as one more step of the representation, after the bins (every per-trial
    # normalization removes it; subject alignment then compares it with the participant's other
    # trials; without the participant's statistics — the graph's defaults — the step is neutral).
    # (docs/research.md: the sustained level)
    trial_level: bool = False

    def seen_times(self) -> int:
        """Time steps of the representation the network reads (after window and bins, plus the
        level step with ``trial_level``)."""
        return self._binned_times() + (1 if self.trial_level else 0)

    def _binned_times(self) -> int:
        if self.time_bins:
            return self.time_bins
        return self.window_times()

    def window_times(self) -> int:
        if self.time_window is None:
            return self.n_times
        start, stop = self.time_window
        return len(range(self.n_times)[start:stop])

    def seen_regions(self) -> int:
        return len(self.region_idx) if self.region_idx is not None else self.n_regions

    def to_dict(self) -> dict:
        return asdict(self)


SUBJECT_ALIGN = ("none", "center", "zscore")
CLASS_RULE = {-1: -3, 0: 0, 1: 2}  # the class-only LEVEL rule


def class_rule_matrix() -> torch.Tensor:
    """(3, 9) one-hot P(LEVEL | CLASS) of the class-only rule."""
    m = torch.zeros(3, 9)
    for c, lvl in enumerate(CLASS_RULE.values()):
        m[c, lvl + 4] = 1.0
    return m


MODEL_KINDS = ("cnn", "linear", "lowrank")


class ValenceNet(nn.Module):
    """What every fmri-edge network shares: raw BOLD (B, 246, T) → per-trial normalization →
    window, bins, regions (the *representation*, (B, C, T')) → subject alignment → logits.

    The representation and its alignment are part of the graph, so training and serving compute
    them the same way. Alignment statistics (per representation entry, over one participant's
    trials) come in as arguments; without them the training population's are used (buffers
    ``pop_mean``/``pop_scale``, set by :func:`fmri_edge.training.fit.fit`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.normalization not in TRIAL_NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {cfg.normalization!r}; "
                f"choose from {sorted(TRIAL_NORMALIZATIONS)}"
            )
        if cfg.subject_align not in SUBJECT_ALIGN:
            raise ValueError(
                f"unknown subject_align {cfg.subject_align!r}; choose from {SUBJECT_ALIGN}"
            )
        if cfg.time_bins and cfg.window_times() % cfg.time_bins:
            raise ValueError(
                f"time_bins={cfg.time_bins} does not divide the {cfg.window_times()} seconds seen"
            )
        if cfg.trial_level and cfg.kind != "linear":
            raise ValueError(
                f'trial_level is for kind = "linear" (a {cfg.kind} would read the level as one more second)'
            )
        idx = cfg.region_idx
        self.register_buffer(
            "region_idx",
            torch.tensor(idx if idx is not None else [], dtype=torch.long),
            persistent=False,
        )
        shape = (cfg.seen_regions(), cfg.seen_times())
        self.register_buffer("pop_mean", torch.zeros(shape))
        self.register_buffer("pop_scale", torch.ones(shape))
        # P(LEVEL | CLASS) (3 × 9), for LEVEL answers of a class-only model: the class-only rule
        # (−1 → −3, 0 → 0, 1 → 2) until fit() sets the training labels' frequencies
        self.register_buffer("level_given_class", class_rule_matrix())
        self.input_se: SqueezeExcite | None = None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw BOLD → the per-trial representation (before subject alignment)."""
        raw = x
        x = self._window(TRIAL_NORMALIZATIONS[self.cfg.normalization](x, self.cfg.baseline_s))
        if self.cfg.time_bins:
            x = x.reshape(x.shape[0], x.shape[1], self.cfg.time_bins, -1).mean(dim=3)
        if self.cfg.trial_level:
            x = torch.cat(
                [x, torch.log(self._window(raw).mean(dim=2, keepdim=True).abs() + EPS)], dim=2
            )
        return x

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.time_window is not None:
            start, stop = self.cfg.time_window
            x = x[:, :, start:stop]
        if self.cfg.region_idx is not None:
            x = x.index_select(1, self.region_idx)
        return x

    def align(
        self,
        x0: torch.Tensor,
        subject_mean: torch.Tensor | None = None,
        subject_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Subject alignment of a representation; a no-op for ``subject_align = "none"``."""
        mode = self.cfg.subject_align
        if mode == "none":
            return x0
        mean = self.pop_mean if subject_mean is None else subject_mean
        x0 = x0 - mean
        if mode == "zscore":
            x0 = x0 / (self.pop_scale if subject_scale is None else subject_scale)
        return x0

    def region_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Input SE excitation per region (B, n_regions_seen); ones for models without it."""
        x = self.normalize(x)
        if self.input_se is None:
            return torch.ones(x.shape[:2], dtype=x.dtype)
        return self.input_se.weights(self.align(x))

    def forward_normalized(self, x0: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.forward_features(x0))  # (B, sum(heads))

    def forward(
        self,
        x: torch.Tensor,
        subject_mean: torch.Tensor | None = None,
        subject_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw BOLD (B, 246, T) → logits (B, sum(heads))."""
        return self.forward_normalized(self.align(self.normalize(x), subject_mean, subject_scale))

    def split_heads(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for task, n in self.cfg.heads.items():
            out[task] = logits[:, start : start + n]
            start += n
        return out


class LinearNet(ValenceNet):
    """The simple baseline every CNN is read against: the representation, flattened, into one
    linear layer (multinomial logistic regression, trained with the same loop and L2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout))
        self.final_layer = nn.Linear(cfg.seen_regions() * cfg.seen_times(), sum(cfg.heads.values()))

    def forward_features(self, x0: torch.Tensor) -> torch.Tensor:
        return self.head(x0)


class LowRankNet(ValenceNet):
    """A linear model with a rank limit over time: the representation (B, C, T') is projected on
    ``rank`` learned time courses (shared by all regions and classes), and the (B, C, rank)
    result feeds one linear layer. C·rank + T'·rank weights per class instead of C·T'."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.temporal = nn.Linear(cfg.seen_times(), cfg.rank, bias=False)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout))
        self.final_layer = nn.Linear(cfg.seen_regions() * cfg.rank, sum(cfg.heads.values()))

    def forward_features(self, x0: torch.Tensor) -> torch.Tensor:
        return self.head(self.temporal(x0))  # (B, C·rank)


def _class_rows(m) -> slice:
    start = 0
    for task, n in m.cfg.heads.items():
        if task == "class":
            return slice(start, start + n)
        start += n
    raise ValueError("no CLASS head")


def contribution_weights(m) -> tuple[torch.Tensor, torch.Tensor]:
    """One member's final layer for the CLASS head, centred over the classes: ``(weight (C,
    regions, k), constant (C,))``. Softmax is unchanged by subtracting the mean over the classes, so
    the centred logit of class c, log p(c) − mean over classes of log p, is exactly
    ``constant[c] + Σ_r Σ_j weight[c, r, j] · features[r, j]``; region r's contribution is its inner
    sum. With subject alignment the features are 0 for the participant's average trial, the reference
    of the contributions."""
    rows = _class_rows(m)
    w, b = m.final_layer.weight[rows].detach(), m.final_layer.bias[rows].detach()
    w = (w - w.mean(0, keepdim=True)).reshape(w.shape[0], m.cfg.seen_regions(), -1)
    return w, b - b.mean()


class SEResCNN(ValenceNet):
    """The SE residual 1-D CNN of Lin & Lee on the representation (B, C, T')."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        c_in = cfg.seen_regions()
        w1, w2, w3 = cfg.widths
        se = cfg.se
        self.input_se = SqueezeExcite(c_in) if se else None
        self.b1 = _conv_se_bn(c_in, w1, relu=True, se=se)
        self.b2 = _conv_se_bn(w1, w2, relu=True, se=se)
        self.s2_0 = _conv_se_bn(c_in, w2, relu=False, se=se)
        self.b3 = _conv_se_bn(w2, w3, relu=True, se=se)
        self.s3_0 = _conv_se_bn(c_in, w3, relu=False, se=se)
        self.s3_1 = _conv_se_bn(w1, w3, relu=False, se=se)
        d1, d2 = cfg.dense
        pool = [nn.AdaptiveAvgPool1d(cfg.head_pool)] if cfg.head_pool else []
        self.head = nn.Sequential(
            *pool,
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(w3 * (cfg.head_pool or cfg.seen_times()), d1),
            nn.ReLU(),
            nn.Linear(d1, d2),
            nn.ReLU(),
        )
        self.final_layer = nn.Linear(d2, sum(cfg.heads.values()))

    def forward_features(self, x0: torch.Tensor) -> torch.Tensor:
        """Aligned representation (B, C, T') → dense features (B, d2)."""
        if self.input_se is not None:
            x0 = self.input_se(x0)
        x1 = self.b1(x0)  # (B, 32, T)
        x2 = self.b2(x1) + self.s2_0(x0)  # (B, 64, T)
        x3 = self.b3(x2) + self.s3_0(x0) + self.s3_1(x1)  # (B, 128, T)
        return self.head(x3)  # (B, d2)


def build_model(cfg: ModelConfig | dict) -> ValenceNet:
    if isinstance(cfg, dict):
        cfg = ModelConfig(
            **{
                **cfg,
                "widths": tuple(cfg.get("widths", (32, 64, 128))),
                "dense": tuple(cfg.get("dense", (512, 100))),
            }
        )
    if cfg.kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {cfg.kind!r}; choose from {MODEL_KINDS}")
    return {"linear": LinearNet, "lowrank": LowRankNet}.get(cfg.kind, SEResCNN)(cfg)
