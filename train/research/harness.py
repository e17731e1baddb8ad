"""The one command-line mechanism of the research scripts (after nanoGPT's configurator): a recipe
from ``--base`` (default: the recipe defaults), changed by ``--set section.key=json`` (repeatable),
its data folder by ``--data``, torch's threads by ``--threads``; and where a script's results go
(``runs/research/NAME.json`` and a line appended to a log).

    from harness import parser, recipe_of, icbhi_dataset
    ap = parser(__doc__)                     # NAME --base --set --data --threads
    args = ap.parse_args()
    r = recipe_of(args)                      # the Recipe, overrides applied, data resolved

Run the scripts from the repository root (``PYTHONPATH=$PWD:$PWD/train/research``, or as
``python train/research/SCRIPT.py``, which puts this folder on the path). Needs the ``research``
extra (scikit-learn) for the scikit-learn rounds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_DATA = Path("../shared/data/icbhi2024/Train")
RESULTS = Path("runs/research")
TUPLE_KEYS = ("widths", "dense")  # recipe fields held as tuples


def parser(
    doc: str | None,
    *,
    name: bool = True,
    recipe: bool = True,
    base: str | None = None,
    data: bool = True,
    threads: int | None = 1,
) -> argparse.ArgumentParser:
    """An ArgumentParser with the shared options: NAME (the result's name), ``--base``, ``--set``
    (recipe scripts), ``--data`` and ``--threads`` (torch's CPU threads; None: not offered)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if name:
        ap.add_argument("name", help="name of the result (runs/research/NAME.json)")
    if recipe:
        ap.add_argument(
            "--base",
            default=base,
            help=f"recipe TOML to start from (default: {base or 'the defaults'})",
        )
        ap.add_argument(
            "--set",
            dest="sets",
            action="append",
            default=[],
            metavar="SECTION.KEY=JSON",
            help="change one recipe value, e.g. --set model.normalization='\"psc_mean\"' (repeatable)",
        )
    if data:
        ap.add_argument(
            "--data",
            type=Path,
            default=None,
            help=f"ICBHI Train folder (default: the recipe's, else {DEFAULT_DATA})",
        )
    if threads is not None:
        ap.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    return ap


def apply_sets(recipe, sets: list[str]):
    """``section.key=json`` (or ``key=json`` for a top-level field) applied to ``recipe`` in order."""
    for kv in sets:
        key, _, value = kv.partition("=")
        if not _:
            raise SystemExit(f"--set {kv!r}: expected SECTION.KEY=JSON")
        section, _, field = key.rpartition(".")
        obj = getattr(recipe, section) if section else recipe
        if not hasattr(obj, field):
            raise SystemExit(f"--set {kv!r}: the recipe has no {key}")
        val = json.loads(value)
        setattr(obj, field, tuple(val) if field in TUPLE_KEYS else val)
    return recipe


def recipe_of(args: argparse.Namespace, default=None):
    """The recipe of the parsed arguments: ``--base`` (else ``default()``, else the Recipe
    defaults), ``--set`` applied, ``recipe.data`` replaced by ``--data`` when given; torch set to
    ``--threads`` threads."""
    from fmri_edge.training.recipe import Recipe, load_recipe

    set_threads(args)
    r = load_recipe(args.base) if args.base else (default() if default else Recipe())
    apply_sets(r, args.sets)
    if args.data:
        r.data = str(args.data)
    return r


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def data_of(args: argparse.Namespace, recipe=None) -> Path:
    """``--data``, else the recipe's data folder, else the default one."""
    return Path(args.data or (recipe.data if recipe is not None and recipe.data else DEFAULT_DATA))


def icbhi_dataset(recipe):
    """The recipe's ICBHI training trials as one Dataset (trials, labels, participants)."""
    from fmri_edge.data.io import load_icbhi
    from fmri_edge.training.protocols import dataset_from_icbhi

    return dataset_from_icbhi(load_icbhi(recipe.data, n_times=recipe.model.n_times))


def write_result(name: str, result: dict, line: str | None = None, log: str = "cv_log.md") -> None:
    """``runs/research/NAME.json``; ``line`` printed and appended to ``runs/research/LOG``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    if line is not None:
        print(line)
        write_log(line, log)


def write_log(line: str, log: str = "cv_log.md") -> None:
    """Append one table row to ``runs/research/LOG`` (the running record of every result)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / log, "a") as f:
        f.write(line + "\n")
