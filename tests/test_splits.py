import numpy as np

from fmri_edge.evaluation import splits

PARTICIPANTS = [f"P{i:02d}" for i in range(1, 17)]


def test_subject_folds_keep_order_mates_together_and_cover_everyone_once():
    folds = splits.subject_folds(PARTICIPANTS)
    assert len(folds) == 9
    tested = [p for _, test in folds for p in test]
    assert sorted(tested) == PARTICIPANTS
    for train, test in folds:
        assert not set(train) & set(test)
        for a, b in splits.ORDER_MATES.items():
            assert (a in test) == (b in test)


def test_inner_validation_is_whole_groups_from_training_side():
    train, test = splits.subject_folds(PARTICIPANTS)[0]
    fit, val = splits.inner_validation(train, 1, seed=3)
    assert set(fit) | set(val) == set(train) and not set(fit) & set(val)
    assert len({splits.subject_group(p) for p in val}) == 1
    assert not set(val) & set(test)


def test_random_split_is_stratified_and_disjoint():
    strata = np.repeat([-1, 0, 1], 160)
    tr, va, te = splits.random_split(strata, seed=0)
    assert len(tr) + len(va) + len(te) == 480
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    for part, n in ((tr, 128), (va, 16), (te, 16)):
        assert np.bincount(strata[part] + 1).tolist() == [n, n, n]
    assert not np.array_equal(splits.random_split(strata, seed=1)[2], te)
