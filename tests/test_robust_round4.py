"""Reliability round four (issue 30): labeled extraction, train, export, output suffixes, info, stream,
and the newcomer's rough edges. Every case is one line naming the file and the problem, exit 2, no
traceback, nothing clobbered, and the good work of the same batch kept."""
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("nilearn", reason="extract needs the nifti extra: pip install 'fmri-edge[nifti]'")

from fmri_edge.cli import app  # noqa: E402
from tests.test_extract import one_line_error  # noqa: E402

runner = CliRunner()
CLASS_MAP = "img_neg=negative,img_neu=0,img_pos=+1"
LABELS = ["--class-column", "trial_type", "--class-map", CLASS_MAP, "--level-column", "rating", "--level-scale", "1:9"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def events_of(study, sub):
    return next(study.rglob(f"{sub}_task-affect_run-1_events.tsv"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("r4")
    res = invoke("simulate", d / "sim", "--study", "--subjects", 4, "--runs", 1, "--trials", 9, "--effect", 0.03)
    assert res.exit_code == 0, res.output
    return d / "sim"


@pytest.fixture
def study(sim, tmp_path):
    """A fresh copy of the simulated labeled study (the tests damage it)."""
    shutil.copytree(sim, tmp_path / "sim")
    return tmp_path / "sim" / "study", tmp_path / "sim" / "atlas.nii.gz"


# ---- labeled extraction: one bad events file refuses that run only --------------------------------------

@pytest.mark.parametrize("labeled", [True, False])
@pytest.mark.parametrize("damage, needle", [
    ("onset\tduration\ttrial_type\trating\tresponse_time\n", "header but no event rows"),
    ("", "empty events file"),
])
def test_one_bad_events_file_refuses_only_its_run(study, tmp_path, labeled, damage, needle):
    root, atlas = study
    events_of(root, "sub-02").write_text(damage)
    out = tmp_path / "trials"
    res = invoke("extract", root, "--atlas", atlas, "--out", out, *(LABELS if labeled else []))
    assert "Traceback" not in res.output
    assert res.exit_code in (0, 3), res.output      # the batch is partial, not refused
    assert needle in " ".join(res.stderr.split()) and "sub-02" in res.stderr
    for sub in ("sub-01", "sub-03", "sub-04"):       # the good runs come out, labeled or not
        assert (out / sub / "fMRI_data.npz").is_file()
        assert (out / sub / "labels.npz").is_file() == labeled
    assert not (out / "sub-02").exists()


def test_labeled_extract_with_no_events_says_where_it_looked(study, tmp_path):
    root, atlas = study
    for f in root.rglob("*_events.tsv"):
        f.unlink()
    res = invoke("extract", root, "--atlas", atlas, "--out", tmp_path / "o", *LABELS)
    one_line_error(res, "no events file sub-01_task-affect_run-1_events.tsv found for any run", "looked in")


def test_decimal_comma_rating_says_so_once(study, tmp_path):
    root, atlas = study
    f = events_of(root, "sub-01")
    lines = f.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[3] = "5,5"
    lines[1] = "\t".join(cells)
    f.write_text("\n".join(lines) + "\n")
    res = invoke("extract", root, "--atlas", atlas, "--out", tmp_path / "o", *LABELS)
    flat = " ".join(res.stderr.split())
    assert "Traceback" not in res.output and res.exit_code == 2, res.output
    assert "rating '5,5' is not a number (a decimal comma? write 5.5" in flat, flat
    assert "rating rating" not in flat and "np.str_" not in flat


def test_participant_whose_events_the_class_map_all_drops_is_named_as_such(study, tmp_path):
    root, atlas = study
    f = events_of(root, "sub-03")
    lines = f.read_text().splitlines()
    rows = [ln.split("\t") for ln in lines[1:]]
    for r in rows:
        r[2] = "catch"
    f.write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n")
    out = tmp_path / "o"
    res = invoke("extract", root, "--atlas", atlas, "--out", out, *LABELS)
    flat = " ".join(res.stderr.split())
    assert "Traceback" not in res.output, res.output
    assert "every event of its runs was dropped before cutting" in flat and "not in the class map" in flat, flat
    assert "fits inside its scan" not in flat
    assert (out / "sub-01" / "labels.npz").is_file() and not (out / "sub-03").exists()


# ---- export trusts nothing in its run folder; refuses to overwrite without --force -----------------------

@pytest.fixture
def run_dir(tmp_path):
    pytest.importorskip("torch")
    from fmri_edge.training.checkpoints import random_run

    run = random_run(tmp_path / "run", widths=(8, 8, 8), dense=(16, 8))
    (run / "results.json").write_text(json.dumps({"protocols": {}, "git_commit": None}))
    return run


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_export_cut_checkpoint_is_one_line(run_dir, tmp_path):
    _cut(run_dir / "model.pt")
    one_line_error(invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
                   "model.pt: cut short or damaged", "retrain it")
    assert not (tmp_path / "m.onnx").exists()


def test_export_cut_results_json_is_one_line(run_dir, tmp_path):
    _cut(run_dir / "results.json", 0.6)
    one_line_error(invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
                   "results.json: not valid JSON", "cut short?")


def test_export_checkpoint_of_another_version_names_the_key_and_the_version(run_dir, tmp_path):
    import torch

    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    ckpt["model_config"]["frobnicate"] = 3
    ckpt["fmri_edge_version"] = "9.9.9"
    torch.save(ckpt, run_dir / "model.pt")
    one_line_error(invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
                   "model.pt: written by fmri-edge 9.9.9", "'frobnicate'", "does not know")
    del ckpt["fmri_edge_version"]
    torch.save(ckpt, run_dir / "model.pt")
    one_line_error(invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
                   "written by an older fmri-edge (the checkpoint does not record which version)")


@pytest.mark.parametrize("existing", ["m.onnx", "m.md"])
def test_export_refuses_to_overwrite_the_model_or_its_card_without_force(run_dir, tmp_path, existing):
    (tmp_path / existing).write_text("tracked")
    one_line_error(invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
                   f"{existing}: exists; use --force to overwrite")
    assert (tmp_path / existing).read_text() == "tracked"


def test_bare_export_looks_where_bare_train_writes(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from fmri_edge.training.recipe import load_recipe, shipped_recipe

    monkeypatch.chdir(tmp_path)
    one_line_error(invoke("export"), f"runs/{load_recipe(shipped_recipe()).name}: no such run folder",
                   "run `fmri-edge train` first")
