"""Trials and networks as the exported graph sees them — one place for export, int8 and bench.

- :func:`graph_inputs` / :func:`graph_trials`: trials exactly as the graph receives them (raw
  BOLD, subject-normalized first where the model asks for it), real ICBHI trials or simulated;
- :func:`load_members`: the networks one ONNX file holds — a run's ``model.pt`` and its
  ``member<j>.pt`` (ensembles), a fold folder's ``member<j>.pt``, or one checkpoint;
- :func:`fold_models`: a run's cross-validation fold models, each with its held-out participants;
- :func:`reference_net`: those networks as PyTorch runs them, averaged like the graph;
- :func:`random_run`: a freshly initialised full-size run folder, for speed tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError
from fmri_edge.data.io import load_icbhi
from fmri_edge.model.normalize import normalize_by_participant
from fmri_edge.simulation.simulate import simulate

DEFAULT_DATA = Path("../shared/data/icbhi2024/Train")


def graph_inputs(
    subjects: dict[str, tuple[np.ndarray, np.ndarray]], subject_norm: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ICBHI {participant: (trials, labels)} → (trials as the graph receives them, labels,
    participant per trial), subject-normalized per participant where the model asks for it."""
    from fmri_edge.training.protocols import dataset_from_icbhi, normalize_subjects

    ds = normalize_subjects(dataset_from_icbhi(subjects), subject_norm)
    return ds.trials.astype(np.float32), ds.labels, ds.participants


def graph_trials(
    data: str | Path, n_times: int, subject_norm: str | None = None
) -> tuple[np.ndarray, str]:
    """Trials as the graph receives them, for parity checks and benchmarks: the real ICBHI trials
    in ``data`` where present (subject-normalized if the model asks for it), else 480 simulated
    ones of the same shape and scale. Returns (trials, where they came from)."""
    x, _, source = participant_trials(data, n_times, subject_norm)
    return x, source


def participant_trials(
    data: str | Path, n_times: int, subject_norm: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`graph_trials` with the participant of every trial: (trials, participants, source)."""
    root = Path(data)
    if root.is_dir():
        try:
            x, _, who = graph_inputs(load_icbhi(root, n_times=n_times), subject_norm)
            return x, who, f"{len(x)} real trials ({root})"
        except InputError:
            pass
    x, _, subj = simulate(
        30, n_times=n_times, n_subjects=16, seed=0
    )  # 480 trials, 16 "participants"
    if (subject_norm or "none") != "none":
        x = normalize_by_participant(x, subj, subject_norm)
    return x.astype(np.float32), subj, f"{len(x)} simulated trials (no real data at {root})"


def _member_index(p: Path) -> int:
    return int(p.stem[6:]) if p.stem[6:].isdigit() else 0


def load_members(path: str | Path) -> tuple[list, dict, dict]:
    """The networks behind one exported model: ``(members, checkpoint, recipe)``.

    ``path``: a run folder (``model.pt``, plus ``member1.pt`` … when the recipe is an ensemble),
    a fold folder of an ensemble run (``member0.pt`` …), or a single checkpoint file."""
    from fmri_edge.training.fit import load_checkpoint

    path = Path(path)
    if path.is_dir() and not (path / "model.pt").is_file():
        files = sorted(path.glob("member*.pt"), key=_member_index)
        if not files:
            raise InputError(
                path,
                "no checkpoint (model.pt or member<j>.pt); run `fmri-edge train --config "
                "train/<recipe>.toml` first",
            )
    else:
        first = path / "model.pt" if path.is_dir() else path
        if not first.is_file():
            raise InputError(
                first, "no checkpoint; run `fmri-edge train --config train/<recipe>.toml` first"
            )
        files = [first]
    model, ckpt = load_checkpoint(files[0])
    recipe = json.loads(ckpt["recipe"]) if isinstance(ckpt.get("recipe"), str) else {}
    members = [model]
    if path.is_dir() and files[0].name == "model.pt" and recipe.get("ensemble"):
        files += sorted(path.glob("member*.pt"), key=_member_index)
    members += [load_checkpoint(p)[0] for p in files[1:]]
    return members, ckpt, recipe


def fold_models(run_dir: str | Path) -> list[tuple[str, list, list[str]]]:
    """The subject-CV fold models of a run: ``[(fold name, members, held-out participants)]``,
    from ``fold<k>.pt`` (one network per fold) or ``fold<k>/member<j>.pt`` (an ensemble per fold)."""
    run_dir = Path(run_dir)

    def k_of(p: Path):
        s = p.stem if p.is_file() else p.name
        return int(s[4:]) if s[4:].isdigit() else s

    out = []
    for p in sorted(
        (q for q in run_dir.glob("fold*") if q.suffix == ".pt" or q.is_dir()), key=k_of
    ):
        members, ckpt, _ = load_members(p)
        out.append(
            (p.stem if p.is_file() else p.name, members, list(ckpt.get("test_participants") or []))
        )
    return out


def reference_net(run: str | Path):
    """The run's network(s) as PyTorch runs them: ``(net, members, ckpt, recipe)``, ``net`` being
    the :class:`~fmri_edge.training.onnx_export.Ensemble` that ``fmri-edge export`` turns into the graph
    (same inputs, same outputs, the members averaged)."""
    from fmri_edge.training.onnx_export import Ensemble, level_from_class

    members, ckpt, recipe = load_members(run)
    rule = (recipe.get("eval") or {}).get("level_rule")
    net = Ensemble(members, members[0].cfg.n_regions, level_from_class(members, rule)).eval()
    return net, members, ckpt, recipe


def random_run(out: str | Path, seed: int = 0, n_members: int = 1, **config) -> Path:
    """A run folder holding a freshly initialised full-size network (``model.pt``; with
    ``n_members`` > 1 an ensemble recipe and ``member<j>.pt``): the same architecture and FLOPs as
    a trained one, so the same speed. For benchmarks and tests only."""
    import torch

    from fmri_edge.training.fit import save_checkpoint
    from fmri_edge.training.model import ModelConfig, build_model
    from fmri_edge.training.recipe import Recipe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"heads": {"class": 3, "level": 9}, **config})
    recipe = Recipe(name=f"random-{out.name}", data=str(DEFAULT_DATA))
    recipe.model = cfg
    recipe.ensemble = n_members > 1
    for j in range(n_members):
        model = build_model(cfg).eval()
        save_checkpoint(
            model,
            out / ("model.pt" if j == 0 else f"member{j}.pt"),
            region_names=[f"region_{i}" for i in range(cfg.n_regions)],
            recipe=json.dumps(recipe.to_dict()),
            epochs=0,
            participants=[],
        )
    return out
