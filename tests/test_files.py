"""Output files are written through one atomic writer (fmri_edge.files): complete or not at all,
never a temporary file left behind — for CSVs, ONNX edits and the integrity stamp alike — and the
research scripts read their options through one harness (train/research/harness.py)."""

import os
import sys
from pathlib import Path

import pytest

from fmri_edge import files
from fmri_edge.model import integrity
from tests import corpus

ROOT = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_replace_atomically_writes_whole_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    path.chmod(0o640)
    with pytest.raises(RuntimeError):
        with files.replace_atomically(path) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n" and _leftovers(tmp_path) == []
    with files.replace_atomically(path) as f:
        f.write("new\r\n")  # text written as given (newline="")
    assert path.read_bytes() == b"new\r\n" and path.stat().st_mode & 0o777 == 0o640
    with files.replace_atomically(tmp_path / "new.bin", binary=True) as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "new.bin").read_bytes() == b"\x00\x01" and _leftovers(tmp_path) == []


def test_a_failed_stamp_leaves_the_model_and_no_temporary_file(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    model = corpus.contract_model(tmp_path / "m.onnx")
    before = model.read_bytes()

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        integrity.stamp(model)
    assert model.read_bytes() == before and _leftovers(tmp_path) == []


def test_research_harness_applies_overrides_in_order(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "train" / "research"))
    sys.modules.pop("harness", None)
    import harness

    from fmri_edge.training.recipe import Recipe

    args = harness.parser(None).parse_args(
        [
            "r1",
            "--set",
            "model.widths=[8,16]",
            "--set",
            "optim.lr=0.1",
            "--set",
            "seed=3",
            "--set",
            "optim.lr=0.2",
            "--data",
            "elsewhere",
        ]
    )
    assert (args.name, args.base, args.threads) == ("r1", None, 1)
    r = harness.apply_sets(Recipe(), args.sets)
    assert r.model.widths == (8, 16) and r.optim.lr == 0.2 and r.seed == 3
    for bad in ("model.no_such_field=1", "optim.lr"):
        with pytest.raises(SystemExit, match=bad.split("=")[0]):
            harness.apply_sets(Recipe(), [bad])
    assert harness.data_of(args) == Path("elsewhere")
