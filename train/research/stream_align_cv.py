"""Subject alignment without the future, measured on the cross-subject CV of a run: each fold's
network exported to ONNX (as train/research/onnx_cv.py does), each held-out participant's 30 trials
answered one at a time in trial order, as `fmri-edge stream` answers them, under each alignment mode
of :class:`fmri_edge.realtime.stream.Alignment`:

- offline: the participant's statistics over all of its 30 trials (what `predict` does; the reference);
- none (`--no-align`): the graph's population defaults for every trial;
- running (the default): trial i aligned with the statistics of trials 1 … i once i ≥ 10, the
  population's defaults before (also with other thresholds, for the choice);
- stats-from: statistics from another run of the same participant. ICBHI has one run per
  participant, so its two halves stand in for two runs: trials 1-15 answered with the statistics of
  trials 16-30 and the other way round (same session: optimistic for a run on another day).

usage: python train/research/stream_align_cv.py runs/fmri-edge [--data ../shared/data/icbhi2024/Train]
"""

import tempfile
from pathlib import Path

import numpy as np

from harness import data_of, parser

MODES = ("offline", "none", "running", "running-5", "running-20", "stats-from")


def decide(decoder, x, subject):
    from fmri_edge.data.io import Source
    from fmri_edge.decoding.answers import Batch, answer

    b = next(
        item
        for item in answer(decoder, Source("p", Path("p")), np.array([1]), x, subject)
        if isinstance(item, Batch)
    )
    return [int(b.valence_class[0]), int(b.valence_level[0])]


def main(argv=None):
    from fmri_edge.evaluation import scoring
    from fmri_edge.data.io import load_icbhi
    from fmri_edge.model.normalize import AlignStats
    from fmri_edge.realtime.stream import Alignment, stats_from_trials
    from onnx_folds import fold_decoders

    ap = parser(__doc__, name=False, recipe=False, threads=None)
    ap.add_argument(
        "run", type=Path, help="run folder written by `fmri-edge train` (with its fold models)"
    )
    args = ap.parse_args(argv)
    run, data = args.run, data_of(args)
    subjects = load_icbhi(data)
    pred = {m: [] for m in MODES}
    true = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, test, d in fold_decoders(run, subjects, Path(tmp)):
            for p in test:
                trials, labels = subjects[p][0].astype(np.float32), subjects[p][1]
                n = len(trials)
                offline = AlignStats.of(d.represent(trials)).result()
                halves = [np.arange(n // 2), np.arange(n // 2, n)]
                other = {}
                for h, idx in enumerate(halves):
                    np.save(Path(tmp) / f"{p}_h{h}.npy", trials[idx])
                for h, idx in enumerate(halves):
                    other.update(
                        {
                            int(i): stats_from_trials(d, [Path(tmp) / f"{p}_h{1 - h}.npy"])
                            for i in idx
                        }
                    )
                running = {
                    m: Alignment(d, "running", min_trials=k)
                    for m, k in (("running", 10), ("running-5", 5), ("running-20", 20))
                }
                for i in range(n):
                    xi = trials[i : i + 1]
                    pred["offline"].append(decide(d, xi, offline))
                    pred["none"].append(decide(d, xi, None))
                    for m, a in running.items():
                        pred[m].append(decide(d, xi, a(xi)[0]))
                    pred["stats-from"].append(decide(d, xi, other[i]))
                    true.append(labels[i])
            print(name, test, flush=True)
    true = np.asarray(true)
    print(f"{len(true)} held-out trials, answered one at a time in trial order ({run}):")
    for m in MODES:
        p = np.asarray(pred[m])
        s = scoring.challenge_score(p[:, 0], true[:, 0], p[:, 1], true[:, 1])
        late = np.tile(
            np.arange(30) >= 10, len(true) // 30
        )  # trials 11-30: where running alignment is on
        acc_late = float((p[late, 0] == true[late, 0]).mean())
        print(
            f"{m:>11}: CLASS acc {1 - s['CLASS_error']:.4f}, Score {s['Score']:.4f}; trials 11-30 only: CLASS acc {acc_late:.4f}"
        )


if __name__ == "__main__":
    main()
