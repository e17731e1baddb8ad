"""The runtime path (import, predict, score, info) never imports torch."""

import subprocess
import sys
import textwrap


def _blocking(*packages: str) -> str:
    """Code that makes ``packages`` (and their submodules) unimportable in a fresh interpreter."""
    return textwrap.dedent(f"""
        import sys
        class _Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {packages!r}:
                    raise ImportError(f"{{name}} is blocked in this test", name=name)
        sys.meta_path.insert(0, _Blocked())
    """)


def _run(code: str, block: tuple[str, ...] = ("torch",)):
    """``code`` in a fresh interpreter where ``block`` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", _blocking(*block) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_importing_runtime_modules_does_not_import_torch():
    r = _run("""
        import sys
        import fmri_edge.cli, fmri_edge.decoding.answers, fmri_edge.evaluation.scoring, fmri_edge.model.runtime, fmri_edge.data.io
        import fmri_edge.data.submission, fmri_edge.simulation.simulate, fmri_edge.evaluation.splits
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_predict_score_info_run_with_torch_unimportable(sim_model, sim_data, tmp_path):
    import numpy as np

    from fmri_edge.data.submission import HEADER

    np.save(tmp_path / "t.npy", sim_data[0][:30])
    labels = tmp_path / "labels.csv"
    labels.write_text(
        ",".join(HEADER)
        + "\n"
        + "".join(f"t,{i + 1},{c},{lv}\n" for i, (c, lv) in enumerate(sim_data[1][:30]))
    )
    r = _run(f"""
        import sys
        from typer.testing import CliRunner
        from fmri_edge.cli import app
        runner = CliRunner()
        for args in (["predict", r"{tmp_path / "t.npy"}", "--model", r"{sim_model}", "--out", r"{tmp_path / "p.csv"}"],
                     ["score", r"{tmp_path / "p.csv"}", r"{labels}"],
                     ["info", r"{sim_model}"]):
            res = runner.invoke(app, args)
            assert res.exit_code == 0, (args, res.output, res.exception)
        assert "torch" not in sys.modules
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr + r.stdout


def test_importing_the_cli_and_extract_does_not_import_nilearn_or_nibabel():
    r = _run(
        (
            """
        import sys
        import fmri_edge.cli, fmri_edge.imaging.extract, fmri_edge.simulation.nifti_sim, fmri_edge.decoding.answers, fmri_edge.data.io
        bad = [m for m in ("nilearn", "nibabel", "torch", "sklearn", "scipy", "pandas") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """
        ),
        block=("nilearn", "nibabel"),
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_extract_without_the_nifti_extra_is_one_line_naming_it(tmp_path):
    r = _run(
        (
            f"""
        from typer.testing import CliRunner
        from fmri_edge.cli import app
        runner = CliRunner()
        for args in (["extract", r"{tmp_path / "bold.nii.gz"}", "--atlas", "a.nii.gz", "--events", "e.tsv",
                      "--out", r"{tmp_path / "t.npz"}"],
                     ["simulate", r"{tmp_path / "sim"}", "--nifti"]):
            res = runner.invoke(app, args)
            assert res.exit_code == 2, (res.output, res.exception)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and "pip install 'fmri-edge[nifti]'" in lines[0], res.stderr
            assert "Traceback" not in res.output
        print("ok")
    """
        ),
        block=("nilearn", "nibabel"),
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr + r.stdout


def test_the_runtime_imports_nothing_of_dask(sim_model, sim_data, tmp_path):
    """Importing the CLI and predicting locally load no dask/distributed; --scheduler without the
    extra is one line naming it, and writes nothing."""
    import numpy as np

    np.save(tmp_path / "t.npy", sim_data[0][:3])
    args = ["predict", str(tmp_path / "t.npy"), "--model", str(sim_model)]
    local = f"""
        import sys
        from typer.testing import CliRunner
        from fmri_edge.cli import app
        import fmri_edge.decoding.answers, fmri_edge.model.runtime
        res = CliRunner().invoke(app, {args!r})
        assert res.exit_code == 0, (res.output, res.exception)
        bad = [m for m in ("dask", "distributed") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """
    blocked = f"""
        from typer.testing import CliRunner
        from fmri_edge.cli import app
        res = CliRunner().invoke(app, {args + ["--out", str(tmp_path / "p.csv"), "--scheduler", "local:2"]!r})
        assert res.exit_code == 2, (res.output, res.exception)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'fmri-edge[dask]'" in lines[0], res.stderr
        assert "Traceback" not in res.output
        print("ok")
    """
    for code, block in ((local, ()), (blocked, ("dask", "distributed"))):
        r = _run(code, block)
        assert r.returncode == 0 and "ok" in r.stdout, r.stderr + r.stdout
    assert not (tmp_path / "p.csv").exists()
