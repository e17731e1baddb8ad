"""The types `info` expects of an fmri-edge model's metadata fields (issue 30): a field edited by
hand or written by another tool (text where an object belongs) is one line naming the field, not
a traceback. Standard library only."""

from __future__ import annotations

from pathlib import Path

from fmri_edge.errors import InputError

OBJECT, LIST, TEXT = dict, list, str
EXPECTED = {
    "normalization": OBJECT,
    "subject_alignment": OBJECT,
    "explanation": OBJECT,
    "training": OBJECT,
    "metrics": OBJECT,
    "study": OBJECT,
    "adaptation": OBJECT,
    "heads": OBJECT,
    "atlas": OBJECT,
    "outputs": LIST,
    "region_names": LIST,
    "model_version": TEXT,
    "architecture": TEXT,
    "recipe": TEXT,
}
NAMES = {dict: "a JSON object", list: "a JSON list", str: "text"}


def check_types(path: str | Path, meta: dict) -> None:
    for key, want in EXPECTED.items():
        value = meta.get(key)
        if value is None or isinstance(value, want):
            continue
        raise InputError(
            path,
            f"metadata field {key!r} is {NAMES.get(type(value), type(value).__name__)} "
            f"({str(value)[:40]!r}), expected {NAMES[want]}; the file was edited or written by "
            "another tool: re-export it with `fmri-edge export`",
        )
    for protocol, m in (meta.get("metrics") or {}).items():
        if not isinstance(m, dict):
            raise InputError(
                path,
                f"metadata field 'metrics' → {protocol!r} is {NAMES.get(type(m), type(m).__name__)}, "
                "expected a JSON object; re-export the model with `fmri-edge export`",
            )
