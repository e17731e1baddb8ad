"""Reading a run folder's files as data that may be damaged (issue 30): a ``model.pt`` cut short,
a ``results.json`` cut short, a checkpoint written by another version (a config key this version
does not know) — each one :class:`~fmri_edge.errors.InputError` naming the file and the problem.
Nothing is unpickled (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fmri_edge
from fmri_edge.errors import InputError

RETRAIN = "retrain it (`fmri-edge train`) or copy the run folder again"


def _writer(ckpt: dict) -> str:
    v = ckpt.get("fmri_edge_version") if isinstance(ckpt, dict) else None
    return (
        f"fmri-edge {v}"
        if isinstance(v, str)
        else "an older fmri-edge (the checkpoint does not record which version)"
    )


def read_checkpoint(path, build_model):
    """``(model in eval mode, checkpoint dict)``."""
    import torch

    from fmri_edge.training.model import ModelConfig

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "no checkpoint; run `fmri-edge train` first") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:100]
        what = (
            "cut short or damaged (an interrupted copy?)"
            if any(
                w in str(e)
                for w in (
                    "central directory",
                    "zip archive",
                    "EOF",
                    "corrupt",
                    "truncated",
                    "PytorchStreamReader",
                )
            )
            else f"not a readable PyTorch checkpoint ({type(e).__name__}: {first})"
        )
        raise InputError(path, f"{what}; {RETRAIN}") from None
    except Exception as e:  # weights_only refuses anything but tensors and plain data
        raise InputError(
            path, f"not a checkpoint of fmri-edge ({type(e).__name__}); nothing in it is unpickled"
        ) from None
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model_config"), dict)
        or "state_dict" not in ckpt
    ):
        raise InputError(path, "not a checkpoint of fmri-edge (no model_config and state_dict)")
    cfg = ckpt["model_config"]
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise InputError(
            path,
            f"written by {_writer(ckpt)}: its model config has key(s) {', '.join(map(repr, unknown))} "
            f"that fmri-edge {fmri_edge.__version__} does not know; export it with the version "
            "that trained it, or retrain with this one",
        )
    try:
        model = build_model(cfg)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise InputError(
            path,
            f"written by {_writer(ckpt)}, and this version ({fmri_edge.__version__}) cannot "
            f"rebuild its network ({type(e).__name__}: {first})",
        ) from None
    return model.eval(), ckpt


def read_results(path: Path) -> dict:
    """A run's ``results.json`` (``{}`` when there is none), or one line: cut short, not an object."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(
            path, "not UTF-8 text; the run's results.json is damaged (" + RETRAIN + ")"
        ) from None
    except json.JSONDecodeError as e:
        raise InputError(
            path,
            f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}; cut short?); " + RETRAIN,
        ) from None
    if not isinstance(results, dict):
        raise InputError(
            path, f"holds a JSON {type(results).__name__}, not the run's results object; " + RETRAIN
        )
    return results
