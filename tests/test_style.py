"""House rules that hold for every file: the formatter's layout (ruff format, line length 100) and
the linter's checks (pyflakes, pycodestyle), as configured in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    if shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff"):
        return [shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")]
    pytest.skip("ruff is not installed (it is in the dev extra: pip install -e '.[dev]')")


def test_the_tree_is_formatted():
    r = subprocess.run(
        [*_ruff(), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_tree_passes_the_linter():
    r = subprocess.run([*_ruff(), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
