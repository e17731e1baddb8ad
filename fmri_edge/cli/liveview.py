"""What the operator sees on a terminal while ``fmri-edge stream`` runs (rich): volumes arrived, the
current framewise displacement and its trace, latency, the answers as they come, flagged trials.
In a pipe, ``stream`` prints JSON lines instead (this view is not used)."""

from __future__ import annotations

import json
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
TRACE = 60  # volumes shown in the FD trace
ANSWERS = 12  # latest answers shown


def sparkline(values, top: float) -> str:
    """FD values as bars, ``top`` (mm) the full bar."""
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            out.append(
                BARS[min(len(BARS) - 1, int(len(BARS) * min(v, top) / top - 1e-9))]
                if v > 0
                else BARS[0]
            )
    return "".join(out)


class LiveView:
    """Callbacks for :class:`fmri_edge.realtime.stream.Stream` (``on_answer``, ``on_problem``, ``on_volume``)
    that redraw one panel on the terminal."""

    def __init__(self, fd_threshold: float, console: Console | None = None):
        self.console = console or Console()
        self.threshold = fd_threshold
        self.volumes = 0
        self.last: dict | None = None
        self.fd: deque = deque(maxlen=TRACE)
        self.answers: deque = deque(maxlen=ANSWERS)
        self.latency: list[float] = []
        self.flagged = 0
        self.n_answers = 0
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=8, transient=False
        )

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self._render())
        return self.live.__exit__(*exc)

    def volume(self, info: dict) -> None:
        self.volumes += 1
        self.last = info
        self.fd.append(info.get("fd"))
        self.live.update(self._render())

    def answer(self, line: str) -> None:
        a = json.loads(line)
        self.n_answers += 1
        self.latency.append(a["latency_ms"])
        self.flagged += bool(a.get("motion_flag"))
        self.answers.append(a)
        self.live.update(self._render())

    def problem(self, p) -> None:
        from rich.markup import escape

        self.live.console.print(
            f"[yellow]{getattr(p, 'outcome', 'error')}:[/] {escape(str(p))}",
            highlight=False,
            soft_wrap=True,
        )

    def _render(self):
        head = Table.grid(padding=(0, 2))
        last = self.last or {}
        fd = last.get("fd")
        lat = sorted(self.latency)
        head.add_row("volumes", str(self.volumes), "last", str(last.get("file", "–")))
        head.add_row(
            "FD now",
            "–"
            if fd is None
            else Text(f"{fd:.3f} mm", style="bold red" if fd > self.threshold else "green"),
            "realign",
            "–" if last.get("realign_ms") is None else f"{last['realign_ms']:.1f} ms",
        )
        head.add_row(
            "answers",
            f"{self.n_answers}" + (f" ({self.flagged} flagged)" if self.flagged else ""),
            "latency",
            f"median {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms" if lat else "–",
        )
        trace = Text(f"FD trace (last {TRACE} volumes, full bar = {2 * self.threshold:g} mm): ")
        for v in self.fd:
            bar = sparkline([v], 2 * self.threshold)
            trace.append(bar, style="red" if v is not None and v > self.threshold else "cyan")
        t = Table(title="answers", expand=False)
        for c in (
            "trial",
            "onset",
            "CLASS",
            "LEVEL",
            "p(-1)",
            "p(0)",
            "p(+1)",
            "fd_max",
            "latency",
        ):
            t.add_column(c, justify="right")
        for a in self.answers:
            flag = a.get("motion_flag")
            t.add_row(
                str(a["trial"]),
                f"{a['onset']:g}",
                f"{a['CLASS']:+d}" if a["CLASS"] else "0",
                str(a["LEVEL"]),
                *(f"{p:.2f}" for p in a["probs"]),
                "–"
                if a.get("fd_max") is None
                else Text(
                    f"{a['fd_max']:.2f}" + (" !" if flag else ""), style="bold red" if flag else ""
                ),
                f"{a['latency_ms']:.0f} ms",
                style="on grey15" if flag else None,
            )
        return Group(head, trace, t)
