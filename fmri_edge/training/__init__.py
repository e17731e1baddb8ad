"""The training side (torch): fit and evaluate a recipe, export a run to ONNX.

:func:`train` and :func:`export` do what ``fmri-edge train`` and ``fmri-edge export`` do (the
commands are thin layers over them). Importing this package imports nothing heavy; torch is
imported when a function runs.

Examples
--------
>>> from fmri_edge import training
>>> training.train.__name__, training.export.__name__
('train', 'export')
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

PROTOCOLS = ("subject", "random", "within")


def train(
    config=None,
    data=None,
    group_by: str | None = None,
    permutations: int = 0,
    protocol=None,
    out=None,
    final: bool = True,
    threads: int = 0,
    scheduler: str | None = None,
    on_plan: Callable | None = None,
    progress: Callable | None = None,
) -> dict:
    """Evaluate a recipe and fit the model to ship, as ``fmri-edge train``.

    Parameters
    ----------
    config : str or Path, optional
        The recipe (TOML); default: the shipped model's.
    data : Path or list of Path, optional
        Study folder(s) of participant folders with ``fMRI_data.npz`` + ``labels.npz`` (``extract
        --class-column``'s output, or ICBHI's Train); several are pooled (participants ``STUDY/sub-XX``).
        Default: the recipe's data.
    group_by : str, optional
        CV groups: ``auto``, ``participants:COLUMN`` or, for pooled studies, ``study``.
    permutations : int
        Reruns of the whole CV with labels shuffled within participant (the p-value of the accuracy).
    protocol : list of str, optional
        ``subject`` (across participants), ``within`` (leave-one-run-out per participant) and/or
        ``random`` (the paper's trial split); default: the recipe's, with ``data`` ``subject``.
    out : Path, optional
        The run folder (written whole at the end); default ``runs/<recipe or study name>``.
    final : bool
        Fit the model to ship on all participants after the evaluation.
    threads : int
        torch CPU threads (0: torch's default).
    scheduler : str, optional
        ``local:N`` or ``tcp://HOST:PORT``: folds and permutations as Dask tasks (the same numbers).
    on_plan : callable, optional
        Called with the fold plan before any fit (the command prints it).
    progress : callable, optional
        ``progress(recipe, plan)`` gives a context manager yielding the ``(stage, epoch, epochs)``
        callback (the command's progress bars).

    Returns
    -------
    dict
        The run's ``results.json`` (``protocols``, ``evaluation``, ``final``, …) and ``out``, the run folder.
    """
    from fmri_edge.errors import UsageError
    from fmri_edge.training.recipe import load_recipe, shipped_recipe
    from fmri_edge.training.run import make_plan, run
    from fmri_edge.training.run_folder import check_out

    if threads:
        import torch

        torch.set_num_threads(threads)
    recipe = load_recipe(config or shipped_recipe())
    if config is None:
        recipe.source = "fmri_edge/training/recipes/fmri-edge.toml (shipped)"
    studies = [Path(d) for d in ([data] if isinstance(data, (str, Path)) else data or [])]
    for d in studies:
        if not d.is_dir():
            raise UsageError(f"--data {d}: no such folder (give a folder of participant folders)")
    if len({d.resolve() for d in studies}) < len(studies):
        raise UsageError("--data: the same folder twice; give each study once")
    first = studies[0] if studies else None
    pooled = studies if len(studies) > 1 else None
    if group_by == "study" and not pooled:
        raise UsageError(
            "--group-by study holds out one study at a time: give two or more --data folders"
        )
    if first is not None:
        if group_by is None and (pooled or first.resolve() != Path(recipe.data).resolve()):
            group_by = "auto"  # the recipe's groups describe the recipe's own data
        recipe.data = str(first)
    # a lab's own study: the honest protocol only (the random trial split is the paper's, optimistic)
    protocols = list(protocol or (["subject"] if first is not None else recipe.eval.protocols))
    bad = set(protocols) - set(PROTOCOLS)
    if bad:
        raise UsageError(f"unknown protocol(s) {sorted(bad)}: use subject, within and/or random")
    if permutations and not {"subject", "within"} & set(protocols):
        raise UsageError(
            "--permutations reruns the subject (or within) CV: keep --protocol subject or within"
        )
    if scheduler:
        from fmri_edge.scheduler import parse_local

        parse_local(scheduler)  # a malformed local:N is one line before anything is loaded
    out = (
        Path(out)
        if out
        else Path("runs")
        / ("+".join(d.resolve().name for d in studies) if studies else recipe.name)
    )
    check_out(out)  # before any work: a run folder that cannot be written is one line
    plan = make_plan(recipe, group_by, protocols, pooled)
    if on_plan is not None:
        on_plan(plan)
    options = dict(
        fit_final=final, plan=plan, permutations=permutations, own_data=first is not None
    )
    with progress(recipe, plan) if progress else nullcontext() as callback:
        if scheduler:
            from fmri_edge.scheduler import connect
            from fmri_edge.training.tasks import DaskExecutor, worker_environment

            with worker_environment(), connect(scheduler) as (client, _):
                results = run(
                    recipe,
                    protocols,
                    out,
                    progress=callback,
                    executor=DaskExecutor(client, scheduler),
                    **options,
                )
        else:
            results = run(recipe, protocols, out, progress=callback, **options)
    return {**results, "out": str(out)}


def export(
    run="runs/fmri-edge",
    out=None,
    recipe=None,
    force: bool = False,
    int8: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """A run folder → a self-describing ONNX model, checked against PyTorch, as ``fmri-edge export``.

    Parameters
    ----------
    run : str or Path
        The run folder ``train`` wrote (default: ``train``'s default).
    out : str or Path, optional
        The ONNX file; default ``models/<recipe name>.onnx`` (a ``train --data`` run: ``RUN/model.onnx``).
    recipe : str or Path, optional
        The export recipe (opset, trial length, parity tolerance).
    force : bool
        Replace an existing file and its model card (refused otherwise, before any work).
    int8 : bool
        Also write ``<name>.int8.onnx``, calibrated on the real training trials, and its card.

    Returns
    -------
    dict
        The export report: ``path``, ``parity`` (largest |onnxruntime − torch| per output), and ``int8``.
    """
    from fmri_edge.training.packaging import export_run

    report = export_run(run, recipe, out, log=log, force=force, int8=int8)
    if int8:
        from fmri_edge.training.quantize import export_int8

        report["int8"] = export_int8(run, report["path"], log=log)
    return report
