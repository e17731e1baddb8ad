"""Progress of long training work on a terminal (issue 30): ``train``'s per-fit callbacks
``(stage, epoch, epochs)`` become one bar per phase — "subject CV: fold k of n", "random split k of
n", "final fit", "permutation null k of n" — which the CLI draws with the elapsed time and an
estimate of what is left; ``report`` says which recipe of how many it trains, with the time so far
and an estimate from the recipes already trained."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Phases:
    """Maps a stage name of :mod:`fmri_edge.training.protocols` to its phase and progress in it."""

    fold_names: list[str]  # "test P01+P10", … in CV order
    seeds: list[int] = field(default_factory=list)

    def locate(self, stage: str, epoch: int, epochs: int) -> tuple[str, str, float, int]:
        """``(phase key, description, completed, total)``: completed counts whole folds (seeds),
        plus the current fit's share of its epochs."""
        head = stage.split(" · ")[0]
        share = min(1.0, epoch / epochs) if epochs else 1.0
        if head in self.fold_names:
            k, n = self.fold_names.index(head), len(self.fold_names)
            single = (
                head == stage
            )  # an ensemble's fold has several fits: count the fold when it is over
            return (
                "subject",
                f"subject CV: fold {k + 1} of {n} ({head})",
                k + (share if single else 0.0),
                n,
            )
        if head.startswith("seed ") and self.seeds:
            s = head[5:]
            k = [str(x) for x in self.seeds].index(s) if s in map(str, self.seeds) else 0
            n = len(self.seeds)
            return (
                "random",
                f"random split {k + 1} of {n} ({head})",
                k + (share if head == stage else 0.0),
                n,
            )
        if head.startswith("permutation"):
            return (
                "permutation",
                f"permutation null: {epoch} of {epochs} reruns of the CV",
                float(epoch),
                epochs,
            )
        if head == "all subjects":
            return "final", "final fit on all participants", share if head == stage else 0.0, 1
        return stage, stage, float(epoch), epochs


class RecipeClock:
    """``report``'s line per recipe it trains: 'recipe k of n, 1 min 20 s so far, about 3 min left'."""

    def __init__(self, n: int, clock=time.monotonic):
        self.n, self.clock, self.start, self.done = n, clock, clock(), 0

    def line(self, name: str) -> str:
        elapsed = self.clock() - self.start
        left = (
            f", about {_duration(elapsed / self.done * (self.n - self.done))} left"
            if self.done
            else ""
        )
        self.done += 1
        return f"training {name} (recipe {self.done} of {self.n} to train; {_duration(elapsed)} so far{left}) …"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
