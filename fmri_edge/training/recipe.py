"""Training recipes: one TOML file per shipped model (see ``train/``), read into dataclasses."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fmri_edge.errors import InputError
from fmri_edge.training.model import TRIAL_NORMALIZATIONS, ModelConfig

EBR_REGIONS = ["A9/46d_L", "A9/46d_R", "aSTS_L", "aSTS_R"]


@dataclass
class OptimConfig:
    lr: float = 1e-3  # paper: 1e-3 for CLASS, 1e-4 for LEVEL
    l2: float = 0.01  # L2 penalty on conv and dense weights (Keras-style, in the loss)
    batch_size: int = 128
    epochs: int = 100  # upper bound; the checkpoint is chosen on validation data
    lookahead_k: int = 6
    lookahead_alpha: float = 0.5
    level_loss_weight: float = 1.0  # multi-head models: weight of the LEVEL cross-entropy
    # the input SE block's lr = lr × this, without L2: at 1 its region weights stay at their
    # initial values (rank correlation 0.998 with init in the subject CV), at 30 they learn
    input_se_lr_mult: float = 1.0
    # training targets smoothed toward uniform by this much (0 = one-hot), after mixup
    label_smoothing: float = 0.0
    # "radam": minibatch RAdam in Lookahead for ``epochs``, checkpoint chosen on validation data.
    # "lbfgs" (kind = "linear" only): full-batch L-BFGS to convergence of scikit-learn's
    # multinomial logistic-regression objective C·Σ log-loss + ½‖W‖² (bias unpenalized), from
    # zero weights: deterministic, no epochs and no checkpoint to choose, so no validation split
    solver: str = "radam"
    C: float = 1.0  # lbfgs: inverse regularization strength (scikit-learn's C)
    max_iter: int = 5000  # lbfgs: iteration limit (a warning in the history if reached)


@dataclass
class AugmentConfig:
    """Applied to training batches only (after the split)."""

    noise_std: float = 0.0  # Gaussian noise, in units of each normalized trial's std
    max_shift: int = 0  # random circular time shift of up to this many seconds
    mixup_alpha: float = 0.0  # mixup between trials of the batch (0 = off)


@dataclass
class EvalConfig:
    protocols: list = field(default_factory=lambda: ["subject"])  # "random" and/or "subject"
    seeds: list = field(default_factory=lambda: [0, 1, 2])  # random 8:1:1 repeats
    inner_val_groups: int = 1  # subject protocol: groups held out of training for validation
    # argmax | min_expected_error. For a class-only model, min_expected_error answers the LEVEL
    # with least expected error under p(class | x) × the training labels' P(LEVEL | class)
    # (Score-optimal); argmax answers the class-only rule −1 → −3, 0 → 0, 1 → 2
    level_rule: str = "argmax"
    # which validation number keeps the checkpoint: "metric" (the selection metric, ties broken by
    # the validation loss), "loss" (the validation cross-entropy, smoother on ~60 trials, ties
    # broken by the metric) or, for an ensemble, "ensemble": one epoch for all its networks, the one
    # with the lowest metric averaged over them (each on its own group: all training subjects
    # together). FitResult.val_metric is the selection metric at the kept epoch in every case
    checkpoint_on: str = "metric"


@dataclass
class Recipe:
    name: str = "fmri-edge"
    data: str = "../shared/data/icbhi2024/Train"
    atlas: str = "../shared/data/icbhi2024/BN_atlas.txt"
    regions: list | None = None  # region names to keep (EBR); None = all 246
    # the subject CV's groups, a property of the data: "auto" (leave-one-participant-out up to 20
    # participants, grouped 10-fold above) or "participants:COL" (a column of data/participants.tsv)
    groups: str = "auto"
    seed: int = 0
    full_epochs: int | None = None  # epochs for the model fit on all subjects (None: from CV)
    # true: the model is an ensemble of one network per subject group, each validated (checkpoint
    # chosen) on its own group and trained on the others; the subject CV evaluates exactly that
    # inside each outer fold (8 networks per fold), the shipped model has one per group (9)
    ensemble: bool = False
    # with ``ensemble``: networks per subject group, each from its own seed (a seed ensemble on top
    # of the group ensemble; every member of a group is validated on that group). 1 = one per group
    ensemble_seeds: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: str = ""  # the recipe file this came from

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls, values: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise InputError(where, f"unknown keys {sorted(unknown)} (known: {sorted(known)})")
    return cls(**values)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such recipe file (see train/ for the shipped ones)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid TOML ({e})") from None
    nested = {
        "model": ModelConfig,
        "optim": OptimConfig,
        "augment": AugmentConfig,
        "eval": EvalConfig,
    }
    parts = {k: _build(cls, raw.pop(k, {}), f"{path} [{k}]") for k, cls in nested.items()}
    for key in ("widths", "dense"):
        setattr(parts["model"], key, tuple(getattr(parts["model"], key)))
    recipe = _build(Recipe, {**raw, **parts}, str(path))
    recipe.source = str(path)
    if recipe.model.normalization not in TRIAL_NORMALIZATIONS:
        raise InputError(
            path,
            f"unknown normalization {recipe.model.normalization!r}; "
            f"choose from {sorted(TRIAL_NORMALIZATIONS)}",
        )
    return recipe


SHIPPED = "fmri-edge.toml"


def shipped_recipe() -> Path:
    """The recipe of the shipped model, installed with the package (``fmri_edge/training/recipes``)."""
    from importlib import resources

    return Path(str(resources.files("fmri_edge.training") / "recipes" / SHIPPED))


def read_atlas(path: str | Path) -> list[str]:
    """BN_atlas.txt (index<TAB>name, header line) → 246 region names in index order."""
    lines = Path(path).read_text().splitlines()[1:]
    names = [ln.split("\t")[1].strip() for ln in lines if ln.strip()]
    return names
