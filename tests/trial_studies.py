"""Small extracted studies written straight as trial folders (what `extract --class-column` writes:
fMRI_data.npz with data and run, labels.npz with data and level_rated), fast enough for CI."""

from pathlib import Path

import numpy as np

from fmri_edge.simulation.simulate import EMOTION_REGIONS, hrf


def write_trial_study(
    root: Path,
    n_participants: int = 6,
    n_runs: int = 2,
    per_run: int = 12,
    *,
    signal: str = "shared",
    effect: float = 0.03,
    noise: float = 0.01,
    seed: int = 0,
    classes=(-1, 0, 1),
    rated: bool = False,
    one_run: str | None = None,
) -> Path:
    """``signal``: shared (the same regions rise or fall with valence in everyone), individual (each
    participant its own random ±1 pattern per class over 24 regions of its own) or null."""
    root = Path(root)
    response = np.convolve(np.r_[np.zeros(5), np.ones(15), np.zeros(5)], hrf(25))[:25]
    response /= response.max()
    levels = np.random.default_rng(seed).uniform(400, 14_000, 246)
    for s in range(1, n_participants + 1):
        sub = f"sub-{s:02d}"
        rng = np.random.default_rng([seed, s])
        regions = rng.choice(246, 24, replace=False)
        pattern = rng.choice([-1.0, 1.0], size=(3, 24))
        level = levels * np.exp(rng.normal(scale=0.2, size=246)) * rng.uniform(0.6, 1.6)
        runs = 1 if one_run == sub else n_runs
        xs, ys, rs = [], [], []
        for r in range(1, runs + 1):
            y = rng.permutation(np.resize(np.asarray(classes), per_run))
            x = rng.normal(scale=noise, size=(per_run, 246, 25)) + rng.normal(
                scale=noise, size=(1, 246, 1)
            )
            if signal == "shared":
                x[:, list(EMOTION_REGIONS)] += effect * y[:, None, None] * response
            elif signal == "individual":
                x[:, regions] += effect * pattern[y + 1][:, :, None] * response
            xs.append((level[None, :, None] * (1 + x)).astype(np.float32))
            ys.append(y)
            rs.append(np.full(per_run, r))
        y = np.concatenate(ys)
        folder = root / sub
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "fMRI_data.npz", data=np.concatenate(xs), run=np.concatenate(rs))
        level_of = np.select([y < 0, y > 0], [-3, 2], 0)
        np.savez(
            folder / "labels.npz",
            data=np.stack([y, level_of], axis=1).astype(np.float64),
            level_rated=np.full(len(y), int(rated), dtype=np.int8),
        )
    return root
