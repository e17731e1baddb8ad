"""The Python face of ``fmri-edge extract``: a NIfTI run or a BIDS study → trials, in memory.

:func:`extract` cuts the same trials as the command (the window from the model's metadata, region
means through :mod:`fmri_edge.imaging.extract`); a run that cannot be used is listed in
``problems`` and the study's other runs still come out. Needs the ``nifti`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError


@dataclass
class Extraction:
    """Trials cut from one run or a study, in participant and run order.

    Attributes
    ----------
    trials : (N, n_regions, n_times) float32 array
        Raw region means, one trial per event (``Decoder.predict`` takes them as they are).
    participant : (N,) array of str
        The BIDS participant (``sub-…``), or the run's file stem for one run.
    onset : (N,) float array
        Each trial's event onset in seconds, in its run's clock.
    trial_type : (N,) array of str
        The event's ``trial_type`` (or ``n/a``).
    notes, problems : lists
        What was assumed (notes) and what was skipped or refused (:class:`InputError`).
    """

    trials: np.ndarray
    participant: np.ndarray
    onset: np.ndarray
    trial_type: np.ndarray
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.trials)


def extract(
    source,
    atlas,
    events=None,
    model=None,
    task: str | None = None,
    space: str | None = None,
    **options,
) -> Extraction:
    """Trials from preprocessed BOLD, as ``fmri-edge extract`` cuts them.

    Parameters
    ----------
    source : str or Path
        A 4-D NIfTI run (then ``events`` is its ``events.tsv``) or a BIDS folder (fMRIPrep-named
        ``*_desc-preproc_bold.nii.gz``, each run's events found by BIDS inheritance).
    atlas : str or Path
        The label image (Brainnetome: labels 1 … 246).
    model : str or Path, optional
        The model whose window (regions, seconds, baseline) the trials must fit; default: the shipped one.
    task, space : str, optional
        Keep only a study's runs of this task / space.
    **options
        Fields of :class:`~fmri_edge.imaging.extract.ExtractOptions` (``tr``, ``slice_time_ref``,
        ``confounds``, ``detrend``, ``high_pass``, ``trial_types``, ``labels``).

    Returns
    -------
    Extraction

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from fmri_edge.simulation import nifti_sim
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> run = nifti_sim.write_run(folder / "bold.nii.gz", folder / "events.tsv", n_events=4)
    >>> cut = extract(run.bold, nifti_sim.write_atlas(folder / "atlas.nii.gz"), events=run.events)
    >>> cut.trials.shape, str(cut.participant[0])
    ((4, 246, 25), 'bold')
    """
    from fmri_edge.imaging import bids
    from fmri_edge.imaging import extract as lib
    from fmri_edge.imaging.atlas import Atlas
    from fmri_edge.imaging.window import Window
    from fmri_edge.model.runtime import Model

    lib.require_nifti()
    window = Window.from_model(Model(model).info)
    opts = lib.ExtractOptions(**options)
    atlas = atlas if isinstance(atlas, Atlas) else Atlas(atlas, window.n_regions)
    source = Path(source)
    if not source.is_dir():
        if events is None:
            raise InputError(source, "give the run's events (events=EVENTS.tsv), or a BIDS folder")
        conf = bids.confounds_beside(source) if opts.confounds == "auto" else opts.confounds
        r = lib.extract_run(source, atlas, events, window, opts, conf)
        return _collect([(bids.stem(source.name) or source.name.split(".")[0], r)], [])
    runs = bids.find_bids_runs(source, task, space, confounds=opts.confounds == "auto")
    done, problems = [], []
    for participant, items in runs.items():
        for run in items:
            if run.events is None:
                problems.append(
                    InputError(
                        run.bold,
                        "no events file found (looked for "
                        f"{', '.join(str(p) for p in run.searched[:3])}); run skipped",
                    )
                )
                continue
            try:
                done.append(
                    (
                        participant,
                        lib.extract_run(run.bold, atlas, run.events, window, opts, run.confounds),
                    )
                )
            except InputError as e:
                problems.append(e)
    return _collect(done, problems)


def _collect(done: list, problems: list) -> Extraction:
    if not done:
        raise problems[0] if problems else InputError("extract", "no run found")
    cat = np.concatenate
    return Extraction(
        cat([r.trials for _, r in done]),
        cat([np.full(len(r.trials), p) for p, r in done]),
        cat([r.onset for _, r in done]),
        cat([r.trial_type for _, r in done]),
        list(dict.fromkeys(n for _, r in done for n in r.notes)),
        problems + [s for _, r in done for s in r.skipped],
    )
