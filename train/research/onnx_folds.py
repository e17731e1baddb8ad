"""The folds of a CV run as ONNX decoders: each fold's networks (runs/NAME/fold<k>/member<j>.pt for an
ensemble, runs/NAME/fold<k>.pt for one network) exported to one ONNX file, as `fmri-edge export` would,
with its held-out participants. Shared by onnx_cv.py and stream_align_cv.py."""

import json
from pathlib import Path

import numpy as np

from fmri_edge.model.runtime import Model
from fmri_edge.training.onnx_export import export_onnx
from fmri_edge.training.fit import load_checkpoint


def fold_decoders(run: Path, subjects: dict, tmp: Path):
    """(fold name, held-out participants, Model) per fold of ``run``; ``subjects`` from load_icbhi."""
    recipe = json.loads(load_checkpoint(run / "model.pt")[1]["recipe"])
    for fold in sorted(
        p for p in run.iterdir() if p.name.startswith("fold") and (p.is_dir() or p.suffix == ".pt")
    ):
        members = [
            load_checkpoint(p)
            for p in (sorted(fold.glob("member*.pt")) if fold.is_dir() else [fold])
        ]
        test = members[0][1]["test_participants"]
        x = np.concatenate([subjects[p][0] for p in subjects if p not in test]).astype(np.float32)
        out = Path(tmp) / f"{fold.name}.onnx"
        export_onnx(
            [m for m, _ in members],
            out,
            {
                "model_version": fold.name,
                "level_rule": recipe["eval"]["level_rule"],
                "region_names": [f"R{i}" for i in range(246)],
            },
            x[:256],
        )
        yield fold.name, test, Model(out)
