"""The official WIDER FACE evaluation, ported from ``eval_tools/wider_eval.m`` and its Python port
(WiderFace-Evaluation ``evaluation.py``), vectorised with NumPy but numerically the same.

Protocol, per setting (easy / medium / hard):
- detection scores are min-max normalised over the whole dataset;
- per image, predictions (sorted by score) are matched greedily to the ground-truth box of highest IoU
  (pixel-inclusive ``+1`` IoU); a match at IoU >= 0.5 to a face outside the setting's keep list marks the
  prediction "ignored" (neither true nor false positive); the first match of each kept face is a hit;
- at 1000 score thresholds the proposals and hits are summed over images (images with no ground-truth
  face or no prediction are skipped, but their kept faces still count in the recall denominator);
- AP is the VOC-style area under the interpolated precision envelope.

The keep lists come from the official ``wider_{easy,medium,hard}_val.mat`` (1-based face indices per image,
in the same face order as ``wider_face_val_bbx_gt.txt``). Boxes come from the txt ground truth of the root
being evaluated; when the root holds ``original_sizes.csv`` (a resized copy of the data) boxes and
predictions are mapped back to original pixels so the ``+1`` IoU convention means what it does officially.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceatlas.evaluation.errors import DatasetError

SETTINGS = ("easy", "medium", "hard")
THRESHOLD_STEPS = 1000
IOU_THRESHOLD = 0.5


@dataclass(slots=True)
class WiderImage:
    """Ground truth of one image: ``boxes`` (n, 4) as x, y, w, h and the 0-based kept faces per setting."""

    name: str  # e.g. "0--Parade/0_Parade_Parade_0_102.jpg"
    boxes: np.ndarray
    keep: dict[str, np.ndarray] = field(default_factory=dict)
    scale: tuple[float, float] = (1.0, 1.0)  # multiply image coordinates by this to get evaluation pixels

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def _is_placeholder(line: str) -> bool:
    """The all-zero box line the official file puts after an image with no face."""
    try:
        return all(float(v) == 0 for v in line.split()) and bool(line.split())
    except ValueError:
        return False


def parse_ground_truth_txt(path: Path) -> list[WiderImage]:
    """Read ``wider_face_val_bbx_gt.txt``: name, count, then count lines ``x y w h blur ...``.

    An image with no face is followed by one line of zeros in the official file; some copies leave it out.
    """
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
    except OSError as exc:
        raise DatasetError(f"cannot read WIDER ground truth {path}: {exc}") from exc
    images: list[WiderImage] = []
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        name = lines[i]
        try:
            count = int(lines[i + 1])
            if count < 0:
                raise ValueError("negative face count")
            rows = [lines[i + 2 + k].split() for k in range(count)]
            values = np.array([[float(v) for v in row[:4]] for row in rows], dtype=np.float64).reshape(
                count, 4
            )
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"{path}: malformed entry for {name!r} at line {i + 1}") from exc
        i += 2 + count
        if count == 0 and i < len(lines) and _is_placeholder(lines[i]):
            i += 1
        images.append(WiderImage(name=name, boxes=values))
    if not images:
        raise DatasetError(f"{path}: no images in the ground truth")
    return images


def load_keep_lists(ground_truth_dir: Path) -> dict[str, dict[str, tuple[int, np.ndarray]]]:
    """Per setting: image stem -> (number of faces, 0-based indices of the faces kept in that setting)."""
    from scipy.io import loadmat

    out: dict[str, dict[str, tuple[int, np.ndarray]]] = {}
    for setting in SETTINGS:
        path = Path(ground_truth_dir) / f"wider_{setting}_val.mat"
        try:
            mat = loadmat(str(path))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from exc
        lists: dict[str, tuple[int, np.ndarray]] = {}
        for event in range(len(mat["event_list"])):
            files = mat["file_list"][event][0]
            boxes = mat["face_bbx_list"][event][0]
            keeps = mat["gt_list"][event][0]
            for j in range(len(files)):
                keep = np.asarray(keeps[j][0], dtype=np.int64).ravel() - 1
                lists[str(files[j][0][0])] = (len(boxes[j][0]), keep)
        out[setting] = lists
    return out


def read_original_sizes(path: Path) -> dict[str, tuple[float, float]]:
    """``original_sizes.csv`` -> image name -> (x, y) factor from the stored image to the original."""
    with Path(path).open(newline="") as handle:
        return {
            row["image"]: (
                float(row["orig_width"]) / float(row["resized_width"]),
                float(row["orig_height"]) / float(row["resized_height"]),
            )
            for row in csv.DictReader(handle)
        }


def load_dataset(root: Path, *, gt_txt: Path | None = None, gt_dir: Path | None = None) -> list[WiderImage]:
    """Ground truth for the images of ``root/images`` that the txt ground truth lists and that exist."""
    root = Path(root)
    gt_txt = gt_txt or root / "wider_face_val_bbx_gt.txt"
    gt_dir = gt_dir or root / "eval_tools" / "ground_truth"
    images_dir = root / "images"
    if not gt_txt.is_file():
        raise DatasetError(f"no WIDER ground truth at {gt_txt}")
    if not images_dir.is_dir():
        raise DatasetError(f"no images folder at {images_dir}")
    keep_lists = load_keep_lists(gt_dir)
    sizes_path = root / "original_sizes.csv"
    sizes = read_original_sizes(sizes_path) if sizes_path.is_file() else {}
    present = []
    for image in parse_ground_truth_txt(gt_txt):
        if not (images_dir / image.name).is_file():
            continue
        for setting in SETTINGS:
            entry = keep_lists[setting].get(image.stem)
            if entry is None:
                raise DatasetError(f"{image.name} is not in the official {setting} ground-truth list")
            count, keep = entry
            if count != len(image.boxes):
                raise DatasetError(
                    f"{image.name}: {len(image.boxes)} faces in {gt_txt.name}, {count} in the official lists"
                )
            image.keep[setting] = keep
        image.scale = sizes.get(image.name, (1.0, 1.0))
        present.append(image)
    if not present:
        raise DatasetError(f"none of the images listed in {gt_txt} exist under {images_dir}")
    return present


def box_overlaps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU matrix (n_pred, n_gt) of x1, y1, x2, y2 boxes with the official pixel-inclusive ``+1`` areas."""
    pred_area = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    gt_area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    iw = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0]) + 1
    ih = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = pred_area[:, None] + gt_area[None, :] - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[:, 2] += out[:, 0]
    out[:, 3] += out[:, 1]
    return out


def image_eval(
    pred: np.ndarray, gt: np.ndarray, keep: np.ndarray, iou_threshold: float = IOU_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Official per-image matching. ``pred`` (n, 5) x, y, w, h, score sorted by descending score;
    ``gt`` (m, 4) x, y, w, h; ``keep`` a boolean mask of the faces that count in this setting.

    Returns (hits so far after each prediction, proposal flag per prediction: 1 counted, -1 ignored).
    """
    overlaps = box_overlaps(_xywh_to_xyxy(pred[:, :4]), _xywh_to_xyxy(gt))
    best = overlaps.argmax(axis=1)
    matched = overlaps[np.arange(len(pred)), best] >= iou_threshold
    proposal = np.where(matched & ~keep[best], -1, 1)
    hit_predictions = np.flatnonzero(matched & keep[best])
    # a kept face is recalled by the first prediction that matches it
    _, first = np.unique(best[hit_predictions], return_index=True)
    new_hits = np.bincount(hit_predictions[first], minlength=len(pred))
    return np.cumsum(new_hits), proposal


def image_pr_info(
    scores: np.ndarray, proposal: np.ndarray, pred_recall: np.ndarray, steps: int = THRESHOLD_STEPS
) -> np.ndarray:
    """(steps, 2): counted proposals and hits among predictions scoring >= each threshold 1 - (t+1)/steps."""
    thresholds = 1 - (np.arange(steps) + 1) / steps
    # scores are descending: the number at or above a threshold is a search in the negated order
    above = np.searchsorted(-scores, -thresholds, side="right")
    counted = np.cumsum(proposal == 1)
    info = np.zeros((steps, 2))
    some = above > 0
    info[some, 0] = counted[above[some] - 1]
    info[some, 1] = pred_recall[above[some] - 1]
    return info


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC-style AP: area under the monotone precision envelope, summed where recall changes."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def normalise_scores(predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official min-max normalisation of scores over the whole dataset (initial min 1, max 0)."""
    scores = [p[:, 4] for p in predictions.values() if len(p)]
    low = min([1.0, *(float(s.min()) for s in scores)])
    high = max([0.0, *(float(s.max()) for s in scores)])
    span = high - low if high > low else 1.0
    out = {}
    for name, pred in predictions.items():
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 5).copy()
        pred[:, 4] = (pred[:, 4] - low) / span
        out[name] = pred
    return out


@dataclass(frozen=True, slots=True)
class WiderResult:
    ap: dict[str, float]  # NaN for a setting without any kept face
    faces: dict[str, int]  # kept faces per setting (the recall denominator)
    images: int
    predictions: int
    curves: dict[str, np.ndarray]  # setting -> (steps, 2) precision, recall


def evaluate(
    images: list[WiderImage],
    predictions: dict[str, np.ndarray],
    iou_threshold: float = IOU_THRESHOLD,
    steps: int = THRESHOLD_STEPS,
) -> WiderResult:
    """AP per setting. ``predictions``: image name -> (n, 5) x, y, w, h, score in the image's coordinates."""
    scaled = {}
    for image in images:
        pred = (
            np.asarray(predictions.get(image.name, np.zeros((0, 5))), dtype=np.float64).reshape(-1, 5).copy()
        )
        pred[:, [0, 2]] *= image.scale[0]
        pred[:, [1, 3]] *= image.scale[1]
        scaled[image.name] = pred[np.argsort(-pred[:, 4], kind="stable")]
    scaled = normalise_scores(scaled)

    ap: dict[str, float] = {}
    faces: dict[str, int] = {}
    curves: dict[str, np.ndarray] = {}
    for setting in SETTINGS:
        pr = np.zeros((steps, 2))
        count_face = 0
        for image in images:
            keep_index = image.keep[setting]
            count_face += len(keep_index)
            pred = scaled[image.name]
            if len(image.boxes) == 0 or len(pred) == 0:
                continue
            gt = image.boxes * np.array([image.scale[0], image.scale[1], image.scale[0], image.scale[1]])
            keep = np.zeros(len(gt), dtype=bool)
            keep[keep_index] = True
            pred_recall, proposal = image_eval(pred, gt, keep, iou_threshold)
            pr += image_pr_info(pred[:, 4], proposal, pred_recall, steps)
        precision = np.divide(pr[:, 1], pr[:, 0], out=np.zeros(steps), where=pr[:, 0] > 0)
        recall = pr[:, 1] / count_face if count_face else np.zeros(steps)
        # with no face to find, AP is undefined rather than 0
        ap[setting] = voc_ap(recall, precision) if count_face else float("nan")
        faces[setting] = count_face
        curves[setting] = np.stack([precision, recall], axis=1)
    return WiderResult(
        ap=ap,
        faces=faces,
        images=len(images),
        predictions=int(sum(len(p) for p in scaled.values())),
        curves=curves,
    )
