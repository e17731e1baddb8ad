"""The same network, written for onnxruntime's CPU kernels: every convolution as one large matrix multiply.

onnxruntime runs a 1-D ``Conv`` one trial at a time (im2col, then a GEMM with only T = 20–25
columns), which left the exported SE residual CNN far below the CPU's float32 GEMM rate and
slower than PyTorch/oneDNN at large batches. :class:`ChannelsLast`
computes exactly the same function with activations laid out (batch, time, channels): a
kernel-3 'same' convolution becomes ``concat(x[t-1], x[t], x[t+1]) @ W`` over all batch × time
rows at once (one GEMM with B·T rows), squeeze-and-excitation averages over the time axis,
batch norm is a per-channel affine map, and the dense head reads the flattened (time, channel)
features with its weight columns permuted to match. ``fmri-edge bench`` measures both forms
(docs/speed.md, "Channels-last export").

:func:`for_inference` converts trained networks and checks on given trials that the converted
network answers as the original (max |difference| ≤ ``atol``); a network it cannot convert, or
whose check fails, is exported as it is. Used by :func:`fmri_edge.training.onnx_export.export_onnx`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fmri_edge.training.model import SEResCNN, SqueezeExcite, contribution_weights

UNITS = ("b1", "b2", "s2_0", "b3", "s3_0", "s3_1")


class _Unit(nn.Module):
    """Conv1d(k, same) → [ReLU] → [SE] → BatchNorm (eval), channels-last, from a trained unit."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        conv, bn = seq[0], seq[-1]
        if not (isinstance(conv, nn.Conv1d) and isinstance(bn, nn.BatchNorm1d)):
            raise TypeError("expected Conv1d … BatchNorm1d")
        k = conv.kernel_size[0]
        if (
            conv.groups != 1
            or conv.stride[0] != 1
            or conv.dilation[0] != 1
            or conv.padding[0] != (k - 1) // 2
            or k % 2 == 0
            or conv.padding_mode != "zeros"
        ):
            raise TypeError("expected an odd-kernel, stride-1 'same' convolution")
        self.k, self.relu = k, any(isinstance(m, nn.ReLU) for m in seq)
        ses = [m for m in seq if isinstance(m, SqueezeExcite)]
        self.se = ses[0] if ses else None
        w = conv.weight.detach()  # (out, in, k)
        self.register_buffer(
            "w", w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous()
        )  # (k·in, out)
        self.register_buffer(
            "b", conv.bias.detach().clone() if conv.bias is not None else torch.zeros(w.shape[0])
        )
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", bn.bias.detach() - bn.running_mean * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C_in) → (B, T, C_out)
        b, t = x.shape[0], x.shape[1]
        # 2-D so that onnxruntime fuses the bias into the GEMM
        y = torch.addmm(self.b, unfold(x, self.k).reshape(b * t, -1), self.w).reshape(b, t, -1)
        if self.relu:
            y = torch.relu(y)
        if self.se is None:
            return y * self.scale + self.shift
        gate = torch.sigmoid(self.se.fc2(torch.relu(self.se.fc1(y.mean(dim=1)))))  # (B, C_out)
        return y * (gate * self.scale).unsqueeze(1) + self.shift  # SE gate and BN scale: one pass


def unfold(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T, C) → (B, T, k·C): the k time-neighbours of every second side by side, zero-padded."""
    if k == 1:
        return x
    p = (k - 1) // 2
    xp = F.pad(x, (0, 0, p, p))
    t = x.shape[1]
    return torch.cat([xp[:, i : i + t] for i in range(k)], dim=2)


class ChannelsLast(SEResCNN):
    """A trained :class:`SEResCNN` computing the same outputs with GEMM-shaped convolutions.
    Normalization, the input SE block and the head's last layers are the original modules."""

    def __init__(self, m: SEResCNN):
        super().__init__(m.cfg)
        self.load_state_dict(m.state_dict())
        self.eval()
        self.units = nn.ModuleDict({name: _Unit(getattr(self, name)) for name in UNITS})
        head = self.head
        if not (
            isinstance(head[0], nn.Flatten) and isinstance(head[2], nn.Linear) and len(head) == 6
        ):
            raise TypeError("unexpected head")
        lin, c3, t = head[2], m.cfg.widths[2], m.cfg.seen_times()
        w = (
            lin.weight.detach()
            .reshape(lin.out_features, c3, t)
            .permute(0, 2, 1)
            .reshape(lin.out_features, t * c3)
        )
        self.register_buffer("head_w", w.t().contiguous())  # rows in (time, channel) order
        self.register_buffer("head_b", lin.bias.detach().clone())

    def forward_features(self, x0: torch.Tensor) -> torch.Tensor:
        if self.input_se is not None:
            x0 = self.input_se(x0)
        u = self.units
        x = x0.transpose(1, 2)  # (B, T, C)
        x1 = u["b1"](x)
        x2 = u["b2"](x1) + u["s2_0"](x)
        x3 = u["b3"](x2) + u["s3_0"](x) + u["s3_1"](x1)
        h = torch.relu(x3.flatten(1) @ self.head_w + self.head_b)
        return self.head[4:](h)  # Linear(d1, d2), ReLU


def for_inference(
    members: list[SEResCNN], trials: np.ndarray, atol: float = 1e-4, log=lambda s: None
) -> list[SEResCNN]:
    """Each network as :class:`ChannelsLast` where it converts and answers like the original on
    ``trials`` (largest |logit difference| ≤ ``atol``); the original otherwise."""
    out = []
    x = torch.as_tensor(np.ascontiguousarray(trials[:64]), dtype=torch.float32)
    for m in members:
        if type(m) is not SEResCNN:  # e.g. the linear baseline: nothing to rewrite
            out.append(m)
            continue
        try:
            fast = ChannelsLast(m.eval())
            with torch.inference_mode():
                diff = float((fast(x) - m(x)).abs().max())
        except (TypeError, AttributeError, RuntimeError, IndexError, KeyError) as e:
            log(f"[yellow]exporting the network unchanged:[/] no channels-last form ({e})")
            out.append(m)
            continue
        if not diff <= atol:
            log(
                f"[yellow]exporting the network unchanged:[/] channels-last form differs by {diff:.1e} > {atol:.0e}"
            )
            out.append(m)
            continue
        out.append(fast)
    return out


# ---- linear ensembles ------------------------------------------------------------------------------


class LinearEnsemble(nn.Module):
    """An ensemble of :class:`~fmri_edge.training.model.LinearNet` on one ``psc_mean`` (or
    ``psc_mean_gsr``: then each bin's mean over the regions is subtracted) representation,
    computing what :class:`~fmri_edge.training.onnx_export.Ensemble` computes in a
    few large operations laid out for onnxruntime's CPU kernels:

    - the time window, the time bins and the trial mean are linear over time, so one
      ``(B·regions, T) @ (T, T'+1)`` product gives every bin minus the trial mean and the trial
      mean itself (the input is read once: percent signal change is
      mean_bin(100·(x − m)/|m|) = 100·(mean_bin(x) − m)/|m|);
    - the rest works on (B, T', regions): onnxruntime's broadcasting is slow along a short
      innermost axis (T' = 5), fast along the 246 regions;
    - every member's final layer is one ``(B, features) @ (features, members·classes)`` GEMM
      (weight rows permuted to the (time, region) order), the members' softmaxes one softmax
      over a (B, members, classes) view, then averaged.

    Same inputs and outputs as the Ensemble (``region_contributions`` included), except that the
    representation keeps the graph's own layout: ``normalized`` is (B, T', regions), ``features`` its
    (T', regions) flattening and
    the alignment statistics ``subject_mean``/``subject_scale`` are (T', regions). Transposing
    them back to the Ensemble's (regions, T') cost 43 % of the kernel time at batch 256
    (onnxruntime computes every output, asked for or not); a participant's statistics are
    computed from ``normalized`` and fed back, and ``adapt`` fits on ``features`` as a vector,
    so the layout is the graph's to choose (:meth:`from_reference` maps the Ensemble's to it).
    Built by :func:`fused_ensemble`, which checks it against the Ensemble."""

    NORMALIZED_AXES = ("batch", "time", "regions")  # time: the T' bins

    def __init__(self, ensemble):
        super().__init__()
        members = list(ensemble.members)
        cfg = members[0].cfg
        self.cfg, self.n_members = cfg, len(members)
        self.n_classes = cfg.heads["class"]
        t = cfg.n_times
        start, stop = cfg.time_window or (0, t)
        seconds = list(range(t))[start:stop]
        bins = cfg.time_bins or len(seconds)
        per_bin = len(seconds) // bins
        proj = torch.full((bins + 1, t), -1.0 / t)  # rows: bin mean − trial mean …
        for k in range(bins):
            proj[k, seconds[k * per_bin : (k + 1) * per_bin]] += 1.0 / per_bin
        proj[bins] = 1.0 / t  # … and the trial mean
        if cfg.trial_level:  # … and the window mean
            proj = torch.cat([proj, torch.zeros(1, t)])
            proj[bins + 1, seconds] = 1.0 / len(seconds)
        self.register_buffer("proj_t", proj)  # (T'+1 or T'+2, T)
        self.bins = bins
        r = cfg.n_regions
        w = torch.cat([m.final_layer.weight.detach() for m in members])  # (members·classes, R·T')
        w = (
            w.reshape(-1, r, cfg.seen_times()).permute(0, 2, 1).reshape(w.shape[0], -1)
        )  # columns in (T', R) order
        self.register_buffer("weight", w.t().contiguous())
        self.register_buffer("bias", torch.cat([m.final_layer.bias.detach() for m in members]))
        self.register_buffer("class_to_level", ensemble.class_to_level.clone())
        # region contributions to the answered class (model.contribution_weights), the members'
        # mean, in the graph's (T', R) layout: (classes, T', R)
        cw = torch.stack([contribution_weights(m)[0] for m in members]).mean(0)  # (C, R, T')
        self.register_buffer("contribution_weight", cw.permute(0, 2, 1).contiguous())
        pop_mean, pop_scale = ensemble.population_stats()
        self.register_buffer("pop_mean", pop_mean.detach().t().contiguous())  # (T', R)
        self.register_buffer("pop_scale", pop_scale.detach().t().contiguous())

    @property
    def aligned(self) -> bool:
        return self.cfg.subject_align != "none"

    def population_stats(self):
        return self.pop_mean, self.pop_scale

    def from_reference(self, name: str, value):
        """An Ensemble input or output (``subject_mean``/``subject_scale`` (R, T'), ``normalized``
        (B, R, T'), ``features`` (B, R·T')), a tensor or an array, in this graph's layout; other
        names unchanged."""
        if name in ("subject_mean", "subject_scale", "normalized"):
            return (
                value.transpose(-1, -2)
                if isinstance(value, torch.Tensor)
                else np.swapaxes(value, -1, -2)
            )
        if name == "features":
            r = self.cfg.n_regions
            cube = value.reshape(value.shape[0], r, -1)
            cube = (
                cube.transpose(1, 2) if isinstance(cube, torch.Tensor) else np.swapaxes(cube, 1, 2)
            )
            return cube.reshape(value.shape[0], -1)
        return value

    def forward(
        self,
        trials: torch.Tensor,
        subject_mean: torch.Tensor | None = None,
        subject_scale: torch.Tensor | None = None,
    ):
        from fmri_edge.training.model import EPS

        y = self.proj_t @ trials.transpose(1, 2)  # (B, T'+1 [+1], R): one pass over the input
        m = y[:, self.bins]  # (B, R) trial means
        x0 = y[:, : self.bins] * (100.0 / (m.abs() + EPS)).unsqueeze(1)  # (B, T', R)
        if (
            self.cfg.normalization == "psc_mean_gsr"
        ):  # global signal: linear, so it commutes with the bins
            x0 = x0 - x0.mean(dim=2, keepdim=True)
        if self.cfg.trial_level:  # log |window mean|: one more step
            x0 = torch.cat([x0, torch.log(y[:, self.bins + 1 :].abs() + EPS)], dim=1)
        z = x0
        if self.aligned:
            z = z - (self.pop_mean if subject_mean is None else subject_mean)
            if self.cfg.subject_align == "zscore":
                z = z / (self.pop_scale if subject_scale is None else subject_scale)
        flat = z.flatten(1)  # (B, T'·R)
        logits = torch.addmm(self.bias, flat, self.weight)  # (B, members · classes)
        probs = torch.softmax(logits.reshape(-1, self.n_members, self.n_classes), dim=2).mean(dim=1)
        level = probs @ self.class_to_level
        region_weights = torch.ones_like(m)  # no attention: uniform
        answered = self.contribution_weight[probs.argmax(dim=1)]  # (B, T', R)
        contributions = (z * answered).sum(dim=1)  # (B, R)
        return probs, level, region_weights, z.flatten(1), x0, contributions


FUSED_NORMALIZATIONS = ("psc_mean", "psc_mean_gsr")


def fused_ensemble(ensemble, trials: np.ndarray, atol: float = 1e-4, log=lambda s: None):
    """:class:`LinearEnsemble` for an Ensemble of class-only linear networks on ``psc_mean`` or
    ``psc_mean_gsr`` without region subsets, where it answers like the Ensemble on ``trials`` (every output within
    ``atol``, relative to its scale); otherwise the Ensemble itself."""
    from fmri_edge.training.model import LinearNet

    members = list(ensemble.members)
    cfg = members[0].cfg
    if not (
        all(type(m) is LinearNet for m in members)
        and cfg.normalization in FUSED_NORMALIZATIONS
        and cfg.region_idx is None
        and list(cfg.heads) == ["class"]
    ):
        return ensemble
    fast = LinearEnsemble(ensemble).eval()
    x = torch.as_tensor(np.ascontiguousarray(trials[:64]), dtype=torch.float32)
    from fmri_edge.model.runtime import CONTRIBUTION_OUTPUT, EXTRA_OUTPUTS, OUTPUT_NAMES

    with torch.inference_mode():
        worst = max(
            float((a - fast.from_reference(n, b)).abs().max()) / max(1.0, float(b.abs().max()))
            for n, a, b in zip(
                (*OUTPUT_NAMES, *EXTRA_OUTPUTS, CONTRIBUTION_OUTPUT), fast(x), ensemble(x)
            )
        )
    if not worst <= atol:
        log(
            f"[yellow]exporting the ensemble unfused:[/] the fused form differs by {worst:.1e} > {atol:.0e}"
        )
        return ensemble
    return fast
