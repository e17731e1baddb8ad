"""The ICBHI 2024 challenge score and the paper's metrics (numpy only).

- CLASS_error = 1 − accuracy.
- LEVEL_error = mean(|pred − true| / (|pred| + |true|)); a term with pred = true = 0 counts as 0.
- Score = 0.6 · CLASS_error + 0.4 · LEVEL_error, each rounded to 4 decimals; lower is better.
"""

from __future__ import annotations

import math

import numpy as np

from fmri_edge.valence import CLASS_VALUES, LEVEL_VALUES, level_terms


def class_error(pred, true) -> float:
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean(pred != true))


def level_error(pred, true) -> float:
    """Mean of :func:`level_terms`, summed exactly (``math.fsum``) so that the order of the trials
    can never change the 4th decimal of the score."""
    terms = level_terms(pred, true)
    return math.fsum(terms.tolist()) / len(terms) if len(terms) else float("nan")


def score_from_errors(class_err: float, level_err: float) -> float:
    """The challenge Score of a CLASS_error and a LEVEL_error, each rounded to 4 decimals first."""
    return round(0.6 * round(class_err, 4) + 0.4 * round(level_err, 4), 4)


def challenge_score(class_pred, class_true, level_pred, level_true) -> dict[str, float]:
    ce = round(class_error(class_pred, class_true), 4)
    le = round(level_error(level_pred, level_true), 4)
    return {"CLASS_error": ce, "LEVEL_error": le, "Score": score_from_errors(ce, le)}


def confusion(pred, true, values) -> np.ndarray:
    """Confusion matrix, rows = true value, columns = predicted value, in the order of ``values``."""
    values = list(values)
    idx = {v: i for i, v in enumerate(values)}
    m = np.zeros((len(values), len(values)), dtype=np.int64)
    for t, p in zip(np.asarray(true).tolist(), np.asarray(pred).tolist()):
        m[idx[t], idx[p]] += 1
    return m


def classification_report(pred, true, values) -> dict:
    """Accuracy, macro precision / sensitivity (recall) / F1 over the classes present in truth
    or prediction (the paper's P / S / F1), per-class values and the confusion matrix."""
    m = confusion(pred, true, values)
    tp = np.diag(m).astype(float)
    pred_n, true_n = m.sum(axis=0), m.sum(axis=1)
    present = (pred_n + true_n) > 0
    precision = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros_like(tp), where=true_n > 0)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(tp),
        where=(precision + recall) > 0,
    )
    return {
        "accuracy": float(tp.sum() / max(m.sum(), 1)),
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "sensitivity": float(recall[present].mean()) if present.any() else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            int(v): {
                "precision": float(p),
                "sensitivity": float(r),
                "f1": float(f),
                "support": int(n),
            }
            for v, p, r, f, n in zip(values, precision, recall, f1, true_n)
        },
        "confusion": m.tolist(),
        "values": [int(v) for v in values],
    }


def full_report(class_pred, class_true, level_pred, level_true) -> dict:
    return {
        **challenge_score(class_pred, class_true, level_pred, level_true),
        "n_trials": int(len(np.asarray(class_true))),
        "CLASS": classification_report(class_pred, class_true, CLASS_VALUES),
        "LEVEL": classification_report(level_pred, level_true, LEVEL_VALUES),
    }


def score(predictions, labels) -> dict:
    """The challenge score and the paper's metrics, as ``fmri-edge score`` prints them.

    Parameters
    ----------
    predictions : Predictions or str or Path
        :meth:`fmri_edge.Decoder.predict`'s answers, or a submission CSV (``Participant,Trial,CLASS,LEVEL``).
    labels : str or Path
        A CSV in the same format, or an ICBHI folder holding ``labels.npz``. Rows are matched by
        participant and trial; any mismatch is an :class:`~fmri_edge.errors.InputError`.

    Returns
    -------
    dict
        ``CLASS_error``, ``LEVEL_error``, ``Score`` (lower is better), ``n_trials``, and per task
        (``"CLASS"``, ``"LEVEL"``) accuracy, precision, sensitivity, F1 and the confusion matrix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("Participant,Trial,CLASS,LEVEL\\nP1,1,1,2\\nP1,2,0,0\\n")
    >>> _ = (folder / "t.csv").write_text("Participant,Trial,CLASS,LEVEL\\nP1,1,1,3\\nP1,2,-1,-2\\n")
    >>> r = score(folder / "p.csv", folder / "t.csv")
    >>> r["CLASS_error"], r["LEVEL_error"], r["Score"]
    (0.5, 0.6, 0.54)
    """
    from pathlib import Path

    from fmri_edge.data import submission

    if isinstance(predictions, (str, Path)):
        pred, pred_name = submission.read_answers(predictions), predictions
    else:
        pred = submission.Answers(
            predictions.participant.astype(str),
            predictions.trial,
            predictions.valence_class,
            predictions.valence_level,
        )
        pred_name = "predictions"
    truth = submission.read_labels(labels)
    pi, ti = submission.align(pred, truth, pred_name, labels)
    return full_report(
        pred.valence_class[pi],
        truth.valence_class[ti],
        pred.valence_level[pi],
        truth.valence_level[ti],
    )
