"""Metric code of ``faceatlas.evaluation`` on small hand-made cases with known answers (no engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceatlas.evaluation.calibration import calibrate, fit_c1, write_calibration
from faceatlas.evaluation.cluster_metrics import cluster_scores
from faceatlas.evaluation.embeddings import subject_face
from faceatlas.evaluation.errors import DatasetError
from faceatlas.evaluation.lfw import pair_similarities, parse_pairs, verification_report
from faceatlas.evaluation.metrics import (
    best_threshold,
    equal_error,
    kfold_accuracy,
    roc_auc,
    tar_at_far,
)
from faceatlas.evaluation.wider import (
    WiderImage,
    box_overlaps,
    evaluate,
    image_eval,
    load_dataset,
    parse_ground_truth_txt,
    voc_ap,
)
from faceatlas.face import DetectedFace
from faceatlas.vectors import compreface_similarity, cosine_to_distance, distance_to_cosine

# --- verification -------------------------------------------------------------------------------------


def test_auc_known_values():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5  # ties count one half
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1]) == 0.0


def test_best_threshold_splits_the_gap():
    threshold, accuracy = best_threshold(np.array([0.1, 0.2, 0.6, 0.7]), np.array([0, 0, 1, 1]))
    assert threshold == pytest.approx(0.4)
    assert accuracy == 1.0


def test_kfold_accuracy_uses_threshold_of_the_other_folds():
    # fold 0 is separable only at 0.55; fold 1 is best split at 0.55 too (3 of 4 right)
    scores = np.array([0.9, 0.8, 0.1, 0.3, 0.7, 0.2, 0.4, 0.25])
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = kfold_accuracy(scores, labels, folds)
    assert [f.threshold for f in result.folds] == pytest.approx([0.55, 0.55])
    assert result.accuracies.tolist() == [1.0, 0.75]
    assert result.mean == pytest.approx(0.875)
    assert result.std == pytest.approx(0.125)


def test_kfold_threshold_is_not_chosen_on_the_test_fold():
    # fold 1 alone would be separable at 0.5, but fold 0 puts the threshold at 0.85
    scores = np.array([0.9, 0.8, 0.6, 0.4])
    labels = np.array([1, 0, 1, 0], dtype=bool)
    result = kfold_accuracy(scores, labels, np.array([0, 0, 1, 1]))
    assert result.folds[1].threshold == pytest.approx(0.85)
    assert result.folds[1].accuracy == 0.5


def test_tar_at_far_allows_floor_far_times_negatives():
    negatives = np.arange(1000) / 1000
    positives = np.array([0.9985, 0.9995, 0.5, 0.99])
    scores = np.concatenate([negatives, positives])
    labels = np.concatenate([np.zeros(1000, bool), np.ones(4, bool)])
    tar, threshold, far = tar_at_far(scores, labels, 1e-3)
    assert 0.998 < threshold < 0.9985
    assert far == pytest.approx(1e-3)
    assert tar == 0.5
    tar, threshold, far = tar_at_far(scores, labels, 0.0)
    assert threshold > 0.999 and far == 0.0 and tar == 0.25


def test_equal_error_symmetric_and_separable():
    negatives = np.linspace(0.0, 1.0, 1001)
    positives = np.linspace(0.5, 1.5, 1001)
    scores = np.concatenate([negatives, positives])
    labels = np.concatenate([np.zeros(1001, bool), np.ones(1001, bool)])
    eer = equal_error(scores, labels)
    assert eer.threshold == pytest.approx(0.75, abs=1e-3)
    assert eer.rate == pytest.approx(0.25, abs=1e-3)

    separable = equal_error(np.array([0.1, 0.2, 0.6, 0.9]), np.array([0, 0, 1, 1]))
    assert separable.rate == 0.0
    assert separable.threshold == pytest.approx(0.4)


def test_distance_similarity_round_trip():
    similarity = np.array([-1.0, 0.0, 0.3, 1.0])
    assert cosine_to_distance(similarity) == pytest.approx([2.0, np.sqrt(2), np.sqrt(1.4), 0.0])
    assert distance_to_cosine(cosine_to_distance(similarity)) == pytest.approx(similarity)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="both"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="length"):
        best_threshold(np.array([0.1, 0.2]), np.array([1]))
    with pytest.raises(ValueError, match="finite"):
        roc_auc([np.nan, 0.2], [0, 1])


# --- calibration ----------------------------------------------------------------------------------------


def _synthetic_pairs(c0: float, c1: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distances symmetric about c0 with P(same | d) = CompreFace(d; c0, c1): the EER point is c0 exactly."""
    rng = np.random.default_rng(seed)
    distances = rng.uniform(c0 - 0.8, c0 + 0.8, n)
    labels = rng.random(n) < compreface_similarity(distances, c0, c1)
    return distances, labels


def test_compreface_curve_crosses_half_at_c0():
    assert compreface_similarity(1.1, 1.1, 5.0) == pytest.approx(0.5)
    assert compreface_similarity(0.0, 1.1, 5.0) > 0.99
    assert compreface_similarity(2.0, 1.1, 5.0) < 0.01


def test_fit_c1_recovers_generating_slope():
    distances, labels = _synthetic_pairs(1.1, 5.0, 200_000)
    assert fit_c1(distances, labels, 1.1) == pytest.approx(5.0, rel=0.03)


def test_calibrate_recovers_c0_c1_and_threshold_at_far():
    distances, labels = _synthetic_pairs(1.2, 6.0, 200_000, seed=1)
    calibration = calibrate("synthetic", distances, labels, far=1e-3)
    assert calibration.c0 == pytest.approx(1.2, abs=0.01)
    assert calibration.c1 == pytest.approx(6.0, rel=0.05)
    assert calibration.eer_distance == calibration.c0
    negatives = distances[~labels]
    assert np.mean(negatives <= calibration.distance_threshold) <= 1e-3
    assert calibration.threshold == pytest.approx(1 - calibration.distance_threshold**2 / 2)
    assert calibration.metrics["ece"] < 0.01  # data drawn from the model itself is calibrated


def test_write_calibration_records_provenance(tmp_path: Path):
    import json

    distances, labels = _synthetic_pairs(1.0, 4.0, 5000)
    path = write_calibration(
        calibrate("demo", distances, labels), dataset="synthetic", command="pytest", directory=tmp_path
    )
    data = json.loads(path.read_text())
    assert path.name == "demo.json"
    assert {"pack", "threshold", "distance_threshold", "c0", "c1", "far", "eer_distance"} <= data.keys()
    assert data["source"]["dataset"] == "synthetic" and data["source"]["command"] == "pytest"


# --- LFW pairs ------------------------------------------------------------------------------------------


PAIRS = """2\t2
Alice\t1\t2
Bob\t1\t3
Alice\t1\tBob\t2
Carol\t4\tDave\t1
Erin\t1\t2
Frank\t2\t10
Erin\t1\tFrank\t2
Gina\t1\tHugo\t1
"""


def test_parse_pairs_folds_and_paths(tmp_path: Path):
    path = tmp_path / "pairs.txt"
    path.write_text(PAIRS)
    pairs = parse_pairs(path)
    assert len(pairs) == 8 and pairs.folds == 2
    assert pairs.same.tolist() == [True, True, False, False] * 2
    assert pairs.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs.left[0] == "Alice/Alice_0001.jpg" and pairs.right[0] == "Alice/Alice_0002.jpg"
    assert pairs.right[3] == "Dave/Dave_0001.jpg"
    assert pairs.right[5] == "Frank/Frank_0010.jpg"
    assert len(parse_pairs(path, folds=1)) == 4
    assert "Bob/Bob_0002.jpg" in pairs.images()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("x y\n", "header"),
        ("1\t1\nAlice\t1\t2\n", "promises"),
        ("1\t1\nAlice\t1\tBob\t2\nAlice\t1\t2\n", "same-person"),
        ("1\t1\nAlice\t1\ttwo\nAlice\t1\tBob\t2\n", "integers"),
    ],
)
def test_parse_pairs_rejects_malformed_files(tmp_path: Path, text: str, message: str):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        parse_pairs(path)


def test_pairs_with_a_missing_face_score_as_different(tmp_path: Path):
    path = tmp_path / "pairs.txt"
    path.write_text(PAIRS)
    pairs = parse_pairs(path, folds=1)
    images = pairs.images()
    index = {name: i for i, name in enumerate(images)}
    embeddings = np.tile(np.array([[1.0, 0.0]], np.float32), (len(images), 1))
    found = np.ones(len(images), bool)
    found[index["Bob/Bob_0003.jpg"]] = False
    similarity = pair_similarities(pairs, index, embeddings, found)
    assert similarity.tolist() == [1.0, -1.0, 1.0, 1.0]


def test_verification_report_fields():
    rng = np.random.default_rng(3)
    same = np.tile(np.repeat([True, False], 300), 5)
    fold = np.repeat(np.arange(5), 600)
    similarity = np.where(same, rng.normal(0.7, 0.1, same.size), rng.normal(0.1, 0.1, same.size)).clip(-1, 1)
    report = verification_report(similarity, same, fold, pack="demo")
    assert report["pairs"] == 3000 and report["folds"] == 5
    assert report["accuracy"]["cross_validated"] is True
    assert report["accuracy"]["mean"] > 0.99
    assert report["auc"] > 0.999
    assert set(report["tar_at_far"]) == {"0.001", "0.01"}
    assert report["calibration"]["c0"] == pytest.approx(report["eer"]["distance_threshold"], abs=0.02)


# --- clustering -----------------------------------------------------------------------------------------


def test_cluster_scores_known_clustering():
    scores = cluster_scores(np.array([0, 0, 1, 1, 1]), np.array(["a", "a", "a", "b", "b"]))
    assert scores.bcubed_precision == pytest.approx(11 / 15)
    assert scores.bcubed_recall == pytest.approx(11 / 15)
    assert scores.bcubed_f == pytest.approx(11 / 15)
    assert scores.pairwise_precision == pytest.approx(0.5)
    assert scores.pairwise_recall == pytest.approx(0.5)
    assert (scores.clusters, scores.identities, scores.unassigned) == (2, 2, 0)


def test_cluster_scores_unassigned_are_singletons():
    scores = cluster_scores(np.array([-1, -1, -1]), np.array([7, 7, 7]))
    assert scores.bcubed_precision == 1.0
    assert scores.bcubed_recall == pytest.approx(1 / 3)
    assert scores.pairwise_precision == 1.0 and scores.pairwise_recall == 0.0
    assert (scores.clusters, scores.unassigned) == (0, 3)

    mixed = cluster_scores(np.array([-1, 4, 4, -1]), np.array([1, 1, 1, 2]))
    # items: 1 alone (p 1, r 1/3), 1&1 together (p 1, r 2/3 each), 2 alone (p 1, r 1)
    assert mixed.bcubed_precision == 1.0
    assert mixed.bcubed_recall == pytest.approx((1 / 3 + 2 / 3 + 2 / 3 + 1) / 4)


def test_cluster_scores_perfect_and_merged():
    truth = np.array([1, 1, 2, 2, 3])
    perfect = cluster_scores(np.array([5, 5, 9, 9, 0]), truth)
    assert perfect.bcubed_f == 1.0 and perfect.pairwise_f == 1.0
    merged = cluster_scores(np.zeros(5, dtype=int), truth)
    assert merged.bcubed_recall == 1.0
    assert merged.bcubed_precision == pytest.approx((2 / 5 * 4 + 1 / 5) / 5)
    assert merged.pairwise_precision == pytest.approx(2 / 10)


def test_cluster_scores_rejects_bad_labels():
    with pytest.raises(ValueError):
        cluster_scores(np.array([0.5, 1.0]), np.array([1, 1]))
    with pytest.raises(ValueError):
        cluster_scores(np.array([-2, 1]), np.array([1, 1]))


# --- WIDER FACE -----------------------------------------------------------------------------------------


def test_voc_ap_of_known_curves():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    # the envelope lifts the dip at recall 0.2 to the later precision 1.0
    assert voc_ap(np.array([0.2, 0.4, 0.6]), np.array([0.5, 1.0, 0.8])) == pytest.approx(0.56)


def test_box_overlaps_uses_inclusive_pixels():
    a = np.array([[0.0, 0.0, 9.0, 9.0]])
    b = np.array([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_overlaps(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_image_eval_counts_duplicates_and_ignored_matches():
    gt = np.array([[0, 0, 10, 10], [50, 50, 10, 10]], dtype=float)
    keep = np.array([True, False])
    pred = np.array([[0, 0, 10, 10, 0.9], [1, 0, 10, 10, 0.8], [50, 50, 10, 10, 0.7], [90, 90, 5, 5, 0.6]])
    hits, proposal = image_eval(pred, gt, keep)
    assert hits.tolist() == [1, 1, 1, 1]  # the duplicate adds no hit
    assert proposal.tolist() == [1, 1, -1, 1]  # the match to an ignored face is not a proposal


def _image(name: str, boxes: list[list[float]], keep: list[int]) -> WiderImage:
    index = np.array(keep, dtype=np.int64)
    return WiderImage(
        name=name, boxes=np.array(boxes, float), keep={s: index for s in ("easy", "medium", "hard")}
    )


def test_perfect_detections_give_ap_one():
    images = [
        _image("a.jpg", [[10, 10, 20, 20], [40, 40, 30, 30]], [0, 1]),
        _image("b.jpg", [[5, 5, 8, 8]], [0]),
    ]
    predictions = {
        "a.jpg": np.array([[10, 10, 20, 20, 0.9], [40, 40, 30, 30, 0.95]]),
        "b.jpg": np.array([[5, 5, 8, 8, 0.5]]),
    }
    result = evaluate(images, predictions)
    assert result.ap == {"easy": pytest.approx(1.0), "medium": pytest.approx(1.0), "hard": pytest.approx(1.0)}
    assert result.faces["easy"] == 3


def test_two_image_case_by_hand():
    # image a: two kept faces, one found (0.9) plus a false positive (0.8);
    # image b: face 0 is ignored in easy/medium but kept in hard; found at 0.95; face 1 kept, found at 0.6
    a = _image("a.jpg", [[10, 10, 20, 20], [100, 100, 20, 20]], [0, 1])
    b = WiderImage(
        name="b.jpg",
        boxes=np.array([[10, 10, 20, 20], [60, 60, 20, 20]], float),
        keep={"easy": np.array([1]), "medium": np.array([1]), "hard": np.array([0, 1])},
    )
    predictions = {
        "a.jpg": np.array([[10, 10, 20, 20, 0.9], [200, 200, 20, 20, 0.8]]),
        "b.jpg": np.array([[10, 10, 20, 20, 0.95], [60, 60, 20, 20, 0.6]]),
    }
    result = evaluate([a, b], predictions)
    # easy: ranked hit, fp, hit over 3 faces -> envelope 1 to recall 1/3, 2/3 to recall 2/3
    assert result.ap["easy"] == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    # hard: hit, hit, fp, hit over 4 faces -> 1 to recall 1/2, 3/4 to recall 3/4
    assert result.ap["hard"] == pytest.approx(0.5 + 0.25 * 0.75)
    assert result.faces == {"easy": 3, "medium": 3, "hard": 4}


def test_setting_without_faces_has_undefined_ap():
    image = WiderImage(
        name="a.jpg",
        boxes=np.array([[10, 10, 20, 20]], float),
        keep={"easy": np.array([], np.int64), "medium": np.array([0]), "hard": np.array([0])},
    )
    result = evaluate([image], {"a.jpg": np.array([[10, 10, 20, 20, 0.9]])})
    assert np.isnan(result.ap["easy"])
    assert result.ap["hard"] == pytest.approx(1.0)


def test_parse_ground_truth_txt_with_empty_image(tmp_path: Path):
    path = tmp_path / "gt.txt"
    path.write_text(
        "e/one.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 1 0 0 0 0 0\ne/none.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
        "e/last.jpg\n1\n9 9 9 9 0 0 0 0 0 0\n"
    )
    images = parse_ground_truth_txt(path)
    assert [i.name for i in images] == ["e/one.jpg", "e/none.jpg", "e/last.jpg"]
    assert images[0].boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert images[1].boxes.shape == (0, 4)
    path.write_text("e/none.jpg\n0\ne/last.jpg\n1\n9 9 9 9 0 0 0 0 0 0\n")  # no placeholder line
    assert [len(i.boxes) for i in parse_ground_truth_txt(path)] == [0, 1]
    path.write_text("e/one.jpg\ntwo\n")
    with pytest.raises(DatasetError, match="malformed"):
        parse_ground_truth_txt(path)


def test_load_shared_wider_subset_matches_official_lists(shared: Path):
    images = load_dataset(shared / "data" / "widerface-val416")
    assert len(images) == 103
    assert sum(len(i.boxes) for i in images) == 1847
    first = next(i for i in images if i.name == "0--Parade/0_Parade_Parade_0_102.jpg")
    assert first.scale == pytest.approx((1024 / 416, 819 / 416))
    for image in images:
        assert set(image.keep["easy"]) <= set(image.keep["medium"]) <= set(image.keep["hard"])
    # ground truth scored as its own predictions is perfect in every setting
    predictions = {i.name: np.column_stack([i.boxes, np.linspace(1, 0.5, len(i.boxes))]) for i in images}
    assert evaluate(images, predictions).ap["hard"] == pytest.approx(1.0)


# --- choice of the subject face -------------------------------------------------------------------------


def _face(box: tuple[float, float, float, float]) -> DetectedFace:
    return DetectedFace(box=box, score=0.9, landmarks=np.zeros((5, 2), np.float32), pack="test")


def test_subject_face_prefers_the_face_centred_on_the_image():
    # a loose, larger false box over the head covers the centre too (LFW Norm_Coleman_0005)
    faces = [_face((93, 0, 227, 135)), _face((56, 58, 152, 193)), _face((0, 0, 20, 20))]
    assert subject_face(faces, 250, 250) == 1
    # nobody covers the centre: the largest face
    assert subject_face([_face((0, 0, 20, 20)), _face((200, 200, 250, 250))], 250, 250) == 1
    assert subject_face([], 250, 250) is None
