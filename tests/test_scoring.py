"""The challenge score and the paper's metrics against values computed by hand."""

import numpy as np
import pytest

from fmri_edge import valence
from fmri_edge.evaluation import scoring


def test_level_error_by_hand_with_zero_over_zero_and_sign_errors():
    pred = [0, 2, -2, 0, 4]
    true = [0, 2, 2, 3, -4]
    # terms: 0/0 -> 0; 0/4 = 0; 4/4 = 1 (sign error); 3/3 = 1 (answered 0); 8/8 = 1
    assert scoring.level_terms(pred, true).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert scoring.level_error(pred, true) == pytest.approx(3 / 5)


def test_level_error_partial_credit():
    # |3 - 1| / (3 + 1) = 0.5 ; |-1 - -4| / (1 + 4) = 0.6
    assert scoring.level_error([3, -1], [1, -4]) == pytest.approx(0.55)


def test_challenge_score_rounds_each_part_to_4_decimals():
    cls_pred, cls_true = [1, 0, -1], [1, 1, -1]  # 1 wrong of 3 -> 0.3333
    lvl_pred, lvl_true = [2, 0, -1], [3, 0, -2]  # 1/5, 0, 1/3 -> mean 0.17778
    s = scoring.challenge_score(cls_pred, cls_true, lvl_pred, lvl_true)
    assert s["CLASS_error"] == 0.3333
    assert s["LEVEL_error"] == 0.1778
    assert s["Score"] == round(0.6 * 0.3333 + 0.4 * 0.1778, 4) == 0.2711


def test_perfect_and_worst():
    assert scoring.challenge_score([0, 1], [0, 1], [0, 3], [0, 3])["Score"] == 0.0
    assert scoring.challenge_score([1, -1], [-1, 1], [4, -4], [-4, 4])["Score"] == 1.0


def test_report_precision_sensitivity_f1_confusion():
    true = np.array([-1, -1, 0, 0, 1, 1])
    pred = np.array([-1, 0, 0, 0, 1, -1])
    r = scoring.classification_report(pred, true, valence.CLASS_VALUES)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # precision: -1: 1/2, 0: 2/3, 1: 1/1 ; recall: 1/2, 1, 1/2
    assert r["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert r["sensitivity"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5]
    assert r["f1"] == pytest.approx(np.mean(f1))
    assert r["accuracy"] == pytest.approx(4 / 6)


def test_min_expected_error_level_rule():
    probs = np.zeros((3, 9))
    probs[0, 4 + 3] = 0.6  # 60 % says +3, 40 % says -3: answering 0 costs 1, +3 costs 0.4
    probs[0, 4 - 3] = 0.4
    probs[1, 4 + 0] = 0.7  # 70 % says 0, 30 % +2: answering 0 costs 0.3, +2 costs 0.7
    probs[1, 4 + 2] = 0.3
    probs[2, 4 + 0], probs[2, 4 + 2], probs[2, 4 + 3] = (
        0.4,
        0.35,
        0.25,
    )  # 0 costs 0.6, +2 costs 0.45
    assert valence.decide_level(probs, "argmax").tolist() == [3, 0, 0]
    assert valence.decide_level(probs, "min_expected_error").tolist() == [3, 0, 2]
    exp = valence.expected_level_error(probs)
    assert exp[0, 4 + 3] == pytest.approx(0.4)
    assert exp[1, 4 + 0] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        valence.decide_level(probs, "median")


def test_score_cli_is_identical_for_any_column_order_bom_and_crlf(tmp_path):
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    rows = [
        ("P1", t, c, lv)
        for t, (c, lv) in enumerate([(1, 2), (0, 0), (-1, -3), (1, 1), (0, -1)], start=1)
    ]
    (tmp_path / "truth.csv").write_text(
        "Participant,Trial,CLASS,LEVEL\n" + "".join(f"{p},{t},{c},{lv}\n" for p, t, c, lv in rows)
    )
    pred = [(p, t, -c, lv // 2) for p, t, c, lv in rows]
    variants = {
        "plain.csv": (
            "Participant,Trial,CLASS,LEVEL",
            lambda p, t, c, lv: f"{p},{t},{c},{lv}",
            "\n",
            "",
        ),
        "pandas.csv": (
            ",LEVEL,p_positive,Trial,Participant,CLASS",
            lambda p, t, c, lv: f"{t - 1},{lv}.0,0.5,{t},{p},{c}",
            "\r\n",
            "\ufeff",
        ),
        "quoted.csv": (
            '"LEVEL","CLASS","Trial","Participant"',
            lambda p, t, c, lv: f'"{lv}","{c}","{t}","{p}"',
            "\r\n",
            "\ufeff",
        ),
    }
    docs = []
    for name, (header, row, eol, bom) in variants.items():
        (tmp_path / name).write_bytes(
            (bom + eol.join([header, *(row(*r) for r in pred)]) + eol).encode()
        )
        res = CliRunner().invoke(
            app, ["score", str(tmp_path / name), str(tmp_path / "truth.csv"), "--json"]
        )
        assert res.exit_code == 0, res.output
        docs.append(res.stdout)
    assert docs[0] == docs[1] == docs[2]
