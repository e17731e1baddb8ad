"""The cross-subject CV of a run, scored through the ONNX path: each fold's networks (runs/NAME/fold<k>/)
exported as one ONNX ensemble, its held-out subjects predicted by `fmri_edge.decoding.answers` exactly as
`fmri-edge predict` does (subject alignment per participant folder), the answers scored against
the labels. Checks that what ships computes what the CV measured.

usage: python train/research/onnx_cv.py runs/fmri-edge [--data ../shared/data/icbhi2024/Train] [--no-align]

--no-align: every participant answered with the graph's defaults, as predict answers a participant
with fewer than 10 trials (or with --no-align).
"""

import tempfile
from pathlib import Path

import numpy as np

from harness import data_of, parser


def main(argv=None):
    from fmri_edge.decoding import answers as lib
    from fmri_edge.evaluation import scoring
    from fmri_edge.data.io import load_icbhi
    from onnx_folds import fold_decoders

    ap = parser(__doc__, name=False, recipe=False, threads=None)
    ap.add_argument(
        "run", type=Path, help="run folder written by `fmri-edge train` (with its fold models)"
    )
    ap.add_argument(
        "--no-align", action="store_true", help="answer every participant with the graph's defaults"
    )
    args = ap.parse_args(argv)
    run, data = args.run, data_of(args)
    subjects = load_icbhi(data)
    pred, true = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, test, d in fold_decoders(run, subjects, Path(tmp)):
            for item in lib.predict(d, [data / p for p in test], align=not args.no_align):
                if isinstance(item, lib.Batch):
                    labels = subjects[item.participant][1][item.trial - 1]
                    pred.append(np.stack([item.valence_class, item.valence_level], 1))
                    true.append(labels)
            print(name, test, flush=True)
    pred, true = np.concatenate(pred), np.concatenate(true)
    s = scoring.challenge_score(pred[:, 0], true[:, 0], pred[:, 1], true[:, 1])
    print(
        f"ONNX path{' without alignment' if args.no_align else ''}, {len(true)} held-out trials: "
        f"CLASS acc {1 - s['CLASS_error']:.4f}, Score {s['Score']:.4f}"
    )


if __name__ == "__main__":
    main()
