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


def _center_region(x: torch.Tensor, baseline_s: int) -> torch.Tensor:
    """Each region minus its mean over the trial's seconds, no rescaling."""
    return x - x.mean(dim=2, keepdim=True)


TRIAL_NORMALIZATIONS = {
    "baseline_sub": _baseline_sub,
    "center_region": _center_region,
    "minmax_trial": _minmax_trial,
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

    n_regions: int = 246          # channels of the input the model sees
    n_times: int = 25             # seconds per trial (1 sample/s)
    heads: dict = field(default_factory=lambda: {"class": 3})  # task -> n_outputs
    se: bool = True               # False = the paper's "vanilla" ablation
    region_idx: list | None = None  # EBR: indices into the 246 input regions
    normalization: str = "minmax_trial"  # per-trial normalization inside the graph
    baseline_s: int = 5           # fixation seconds at the start of a trial
    dropout: float = 0.0          # before the dense head (not in the paper)
    widths: tuple = (32, 64, 128)
    dense: tuple = (512, 100)
    # seconds [start, stop) kept after normalization (input stays n_times long); None = all
    time_window: list | None = None
    # subject-wise normalization applied OUTSIDE the graph, per participant over all its trials,
    # by fmri_edge.normalize.subject_normalize (numpy): "none" | "zscore" | "center"
    subject_norm: str = "none"

    def seen_times(self) -> int:
        if self.time_window is None:
            return self.n_times
        start, stop = self.time_window
        return len(range(self.n_times)[start:stop])

    def to_dict(self) -> dict:
        return asdict(self)


class SEResCNN(nn.Module):
    """Raw BOLD (B, 246, T) in, logits per head out. Normalization is part of the graph."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.normalization not in TRIAL_NORMALIZATIONS:
            raise ValueError(f"unknown normalization {cfg.normalization!r}; "
                             f"choose from {sorted(TRIAL_NORMALIZATIONS)}")
        idx = cfg.region_idx
        self.register_buffer("region_idx", torch.tensor(idx if idx is not None else [], dtype=torch.long),
                             persistent=False)
        c_in = len(idx) if idx is not None else cfg.n_regions
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
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(cfg.dropout),
            nn.Linear(w3 * cfg.seen_times(), d1), nn.ReLU(),
            nn.Linear(d1, d2), nn.ReLU(),
        )
        self.final_layer = nn.Linear(d2, sum(cfg.heads.values()))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = TRIAL_NORMALIZATIONS[self.cfg.normalization](x, self.cfg.baseline_s)
        if self.cfg.time_window is not None:
            start, stop = self.cfg.time_window
            x = x[:, :, start:stop]
        if self.cfg.region_idx is not None:
            x = x.index_select(1, self.region_idx)
        return x

    def region_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Input SE excitation per region (B, n_regions_seen); ones for the vanilla model."""
        x = self.normalize(x)
        if self.input_se is None:
            return torch.ones(x.shape[:2], dtype=x.dtype)
        return self.input_se.weights(x)

    def forward_features(self, x0: torch.Tensor) -> torch.Tensor:
        """Normalized (B, C, T) → dense features (B, 100)."""
        if self.input_se is not None:
            x0 = self.input_se(x0)
        x1 = self.b1(x0)                                         # (B, 32, T)
        x2 = self.b2(x1) + self.s2_0(x0)                         # (B, 64, T)
        x3 = self.b3(x2) + self.s3_0(x0) + self.s3_1(x1)         # (B, 128, T)
        return self.head(x3)                                     # (B, 100)

    def forward_normalized(self, x0: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.forward_features(x0))       # (B, sum(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw BOLD (B, 246, T) → logits (B, sum(heads))."""
        return self.forward_normalized(self.normalize(x))

    def split_heads(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for task, n in self.cfg.heads.items():
            out[task] = logits[:, start:start + n]
            start += n
        return out


def build_model(cfg: ModelConfig | dict) -> SEResCNN:
    if isinstance(cfg, dict):
        cfg = ModelConfig(**{**cfg, "widths": tuple(cfg.get("widths", (32, 64, 128))),
                             "dense": tuple(cfg.get("dense", (512, 100)))})
    return SEResCNN(cfg)
