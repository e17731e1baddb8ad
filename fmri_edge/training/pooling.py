"""``train --data A --data B …``: several extracted studies pooled into one dataset.

- Participants are scoped by study: ``A/sub-01`` and ``B/sub-01`` are two people (the study's name
  is its folder's name, made unique with its parent's where two folders share one).
- The studies pool by CLASS: ``extract``'s class map has already put every study's own codes on
  −1 / 0 / +1, and a trial keeps its CLASS whatever the study called it. Only classes every study
  has are kept (the others' trials are dropped and counted per study); studies with no class in
  common are refused. LEVEL: ``extract`` maps every rating scale onto −4 … 4; a trial's LEVEL counts
  as a rating only where its study rated it (``level_rated``), so LEVEL is evaluated on the rated
  trials of the studies that have ratings, never on the class-only rule of the others.
- Trials are cut to 1-s samples by ``extract`` whatever the TR, so studies of different TR pool.
- Alignment: the recipe aligns each participant over its own trials (percent signal change,
  z-scored per participant), so each study is aligned on its own statistics — finer still, on each
  of its participants'; nothing is computed across studies.
- Groups: ``--group-by study`` is leave-one-study-out (the held-out question is a whole study: other
  stimuli, scanner, TR); otherwise ``auto`` over all participants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_edge.evaluation import splits
from fmri_edge.errors import UsageError
from fmri_edge.training.evaluation import binomial_threshold, held_out
from fmri_edge.training.protocols import Dataset
from fmri_edge.training.recipe import Recipe

SEP = "/"


def study_names(paths: list[Path]) -> list[str]:
    names = [Path(p).resolve().name for p in paths]
    out = []
    for p, n in zip(paths, names):
        if names.count(n) > 1:
            n = f"{Path(p).resolve().parent.name}-{n}"
        while n in out:
            n = f"{n}-{len(out) + 1}"
        out.append(n)
    return out


def load_studies(
    recipe: Recipe, paths: list[Path], group_by: str | None, load_dataset
) -> tuple[Dataset, list[str], str, list[dict]]:
    """The studies as one :class:`Dataset` (participants ``STUDY/participant``), the region names,
    where the groups come from, and per study: name, path, participants, trials, classes kept.
    ``load_dataset(recipe, group_by)`` reads one study (:func:`fmri_edge.training.run.load_dataset`)."""
    import json

    check_classes(paths)
    parts, infos, names = [], [], None
    data0 = recipe.data
    try:
        for name, path in zip(study_names(paths), paths):
            recipe.data = str(path)
            ds, region_names, _ = load_dataset(recipe, "auto")
            names = names or region_names
            labels_json = Path(path) / "labels.json"
            lab = json.loads(labels_json.read_text()) if labels_json.is_file() else {}
            infos.append(
                {
                    "name": name,
                    "path": str(path),
                    "classes": sorted(set(ds.labels[:, 0].astype(int).tolist())),
                    "class_map": lab.get("class_map"),
                    "level": lab.get("level"),
                }
            )
            parts.append((name, ds))
    finally:
        recipe.data = data0
    common = set.intersection(*(set(i["classes"]) for i in infos))
    if not common:
        raise UsageError(
            "the studies have no CLASS in common ("
            + "; ".join(
                f"{i['name']}: {', '.join(f'{c:+d}' if c else '0' for c in i['classes'])}"
                for i in infos
            )
            + "): pooled studies pool by CLASS; check their --class-map"
        )
    pieces = []
    for (name, ds), info in zip(parts, infos):
        keep = np.isin(ds.labels[:, 0], sorted(common))
        info["dropped_trials"] = int((~keep).sum())
        ds = ds.take(keep)
        ds.participants = np.asarray([f"{name}{SEP}{p}" for p in ds.participants.tolist()])
        info["participants"] = len(set(ds.participants.tolist()))
        info["trials"] = int(len(ds.labels))
        info["rated_trials"] = (
            int(ds.level_rated.sum()) if ds.level_rated is not None else info["trials"]
        )
        info["classes"] = sorted(common)
        pieces.append(ds)
    ds = Dataset(
        np.concatenate([d.trials for d in pieces]),
        np.concatenate([d.labels for d in pieces]),
        np.concatenate([d.participants for d in pieces]),
        np.concatenate([d.trial_index for d in pieces]),
        level_rated=np.concatenate(
            [
                d.level_rated if d.level_rated is not None else np.ones(len(d.labels), bool)
                for d in pieces
            ]
        ),
    )
    people = sorted(set(ds.participants.tolist()))
    by = group_by or "auto"
    if by == "study":
        groups = {p: p.split(SEP, 1)[0] for p in people}
        how = f"leave-one-study-out ({len(infos)} studies: {', '.join(i['name'] for i in infos)})"
    elif by == "auto":
        groups, how = splits.study_groups(people, "auto", paths[0])
        how += f" over {len(infos)} pooled studies"
    else:
        raise UsageError(
            f"--group-by {by!r} with several --data: use auto or study (leave-one-study-out)"
        )
    ds.groups = np.asarray([groups[p] for p in ds.participants])
    return ds, names, how, infos


def _label(c: int) -> str:
    return f"{c:+d}" if c else "0"


def check_classes(paths: list[Path]) -> None:
    """The studies' CLASS sets (from their labels.npz, before any trial is read): refused in one
    line when they have no class in common, or share fewer than the three the model decodes."""
    from fmri_edge.data.io import LABEL_FILE, discover, load_labels

    sets = {}
    for name, path in zip(study_names(paths), paths):
        have: set[int] = set()
        for src in discover([Path(path)]):
            if (src.path.parent / LABEL_FILE).is_file():
                have |= set(load_labels(src.path.parent / LABEL_FILE)[:, 0].tolist())
        sets[name] = have
    common = set.intersection(*sets.values())
    listed = "; ".join(
        f"{n}: {', '.join(_label(c) for c in sorted(v)) or 'none'}" for n, v in sets.items()
    )
    if not common:
        raise UsageError(
            f"the studies have no CLASS in common ({listed}): pooled studies pool by CLASS; check "
            "their --class-map"
        )
    if len(common) < 3:
        raise UsageError(
            f"the studies share CLASS {', '.join(_label(c) for c in sorted(common))} only ({listed}); "
            "the model decodes all three: pool studies that label every class"
        )


def study_table(folds, level_rule: str) -> list[dict]:
    """Per study: its participants' held-out trials, accuracy and binomial chance threshold."""
    h = held_out(folds, level_rule)
    study = np.asarray([p.split(SEP, 1)[0] for p in h["participant"].tolist()])
    rows = []
    for s in sorted(set(study.tolist())):
        m = study == s
        true = h["true"][m]
        p0 = max(max(float(np.mean(true == c)) for c in (-1, 0, 1)), 1 / 3)
        rows.append(
            {
                "study": s,
                "participants": len(set(h["participant"][m].tolist())),
                "trials": int(m.sum()),
                "CLASS_accuracy": round(float(np.mean(true == h["pred"][m])), 4),
                "binomial_threshold": round(binomial_threshold(int(m.sum()), p0), 4),
            }
        )
    return rows
