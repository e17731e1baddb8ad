"""The cross-subject CV of a run, scored through the ONNX path: each fold's networks (runs/NAME/fold<k>/)
exported as one ONNX ensemble, its held-out subjects predicted by `fmri_edge.predict` exactly as
`fmri-edge predict` does (subject alignment per participant folder), the answers scored against
the labels. Checks that what ships computes what the CV measured.

usage: python train/research/onnx_cv.py runs/fmri-edge [--data ../shared/data/icbhi2024/Train] [--no-align]

--no-align: every participant answered with the graph's defaults, as predict answers a participant
with fewer than 10 trials (or with --no-align).
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fmri_edge import predict as lib, scoring  # noqa: E402
from fmri_edge.io import load_icbhi  # noqa: E402
from onnx_folds import fold_decoders  # noqa: E402

run = Path(sys.argv[1])
data = Path(sys.argv[sys.argv.index("--data") + 1]) if "--data" in sys.argv else Path("../shared/data/icbhi2024/Train")
subjects = load_icbhi(data)
pred, true = [], []
with tempfile.TemporaryDirectory() as tmp:
    for name, test, d in fold_decoders(run, subjects, Path(tmp)):
        for item in lib.predict(d, [data / p for p in test], align="--no-align" not in sys.argv):
            if isinstance(item, lib.Batch):
                labels = subjects[item.participant][1][item.trial - 1]
                pred.append(np.stack([item.valence_class, item.valence_level], 1))
                true.append(labels)
        print(name, test, flush=True)
pred, true = np.concatenate(pred), np.concatenate(true)
s = scoring.challenge_score(pred[:, 0], true[:, 0], pred[:, 1], true[:, 1])
print(f"ONNX path{' without alignment' if '--no-align' in sys.argv else ''}, {len(true)} held-out trials: CLASS acc {1 - s['CLASS_error']:.4f}, Score {s['Score']:.4f}")
