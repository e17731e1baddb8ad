"""The job of ``fmri-edge predict TRIALS.npy --out OUT.csv``, done the PyTorch way: import torch,
load the checkpoint, normalize, predict, write the CSV. The cold-start comparison of
:func:`fmri_edge.training.bench.coldstart.cold_start` runs it as
``python -m fmri_edge.training.bench.torch_predict RUN TRIALS.npy OUT.csv THREADS``."""

import csv
import sys
from pathlib import Path

import numpy as np
import torch

from fmri_edge import valence
from fmri_edge.model.normalize import AlignStats, subject_normalize
from fmri_edge.decoding.answers import MIN_ALIGN_TRIALS
from fmri_edge.training.checkpoints import reference_net


def main(run: Path, trials_path: Path, out_path: str, threads: int) -> None:
    torch.set_num_threads(threads)
    net, members, ckpt, recipe = reference_net(run)
    cfg = members[0].cfg
    x = np.load(trials_path).astype(np.float32)
    x = x[None] if x.ndim == 2 else x
    if cfg.subject_norm != "none":
        x = subject_normalize(x, cfg.subject_norm)
    with torch.inference_mode():
        x = torch.from_numpy(x)
        subject = ()
        if (
            net.aligned and len(x) >= MIN_ALIGN_TRIALS
        ):  # the file is one participant: aligned over its trials
            subject = tuple(
                torch.from_numpy(a) for a in AlignStats.of(members[0].normalize(x).numpy()).result()
            )
        class_probs, level_probs, *_ = (t.numpy() for t in net(x, *subject))
    c = valence.decide_class(class_probs)
    lv = valence.decide_level(level_probs, recipe.get("eval", {}).get("level_rule", "argmax"))
    with open(out_path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["Participant", "Trial", "CLASS", "LEVEL"])
        for i in range(len(x)):
            w.writerow([trials_path.stem, i + 1, int(c[i]), int(lv[i])])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
