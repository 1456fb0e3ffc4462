"""Face detectors (YuNet, SCRFD): letterbox input, decode anchor outputs, NMS.

Detectors see a resized copy of the image; every result is returned in the coordinates of the
image they were given (the engine maps those to original pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import cv2
import numpy as np

from faceatlas.errors import ModelConfigError
from faceatlas.models.runtime import create_session

if TYPE_CHECKING:
    from faceatlas.models.packs import ModelRef
    from faceatlas.models.registry import LoadContext


@dataclass(frozen=True, slots=True)
class Detections:
    """N detections: boxes (N,4) x_min,y_min,x_max,y_max; scores (N,); landmarks (N,5,2)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    def scaled(self, factor: float) -> Detections:
        return Detections(self.boxes * factor, self.scores, self.landmarks * factor)


# Small images are enlarged at most this much: more blurs the landmarks that alignment relies on
# (LFW's 250 px faces: 99.07 % enlarged 2.56x, 99.37 % capped at 2x) and finds no extra faces.
MAX_UPSCALE = 2.0


def letterbox(
    rgb: np.ndarray, width: int, height: int, *, multiple: int | None = None
) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio to fit width x height, padding bottom/right.

    The canvas is width x height, or with ``multiple`` only as large as the resized image rounded
    up to that multiple (for networks that take any size: a 250 px photo needs no 640 px canvas).
    Returns the canvas and the factor that maps canvas coordinates back to ``rgb`` coordinates.
    """
    h, w = rgb.shape[:2]
    ratio = min(width / w, height / h, MAX_UPSCALE)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    if multiple:
        width, height = -(-new_w // multiple) * multiple, -(-new_h // multiple) * multiple
    if ratio == 1:
        resized = rgb
    else:
        interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    if (new_w, new_h) == (width, height):
        return np.ascontiguousarray(resized), 1.0 / ratio
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, 1.0 / ratio


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    if len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    xywh = np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou_threshold)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def _transposes_batch_inwards(path: Path) -> bool:
    """Whether the graph moves the batch axis inside (InsightFace's Transpose perm=(2, 3, 0, 1))."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    perms = {
        tuple(attr.ints)
        for node in model.graph.node
        if node.op_type == "Transpose"
        for attr in node.attribute
        if attr.name == "perm"
    }
    return (2, 3, 0, 1) in perms


def _grid(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    ys, xs = np.mgrid[:rows, :cols]
    centers = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    return np.repeat(centers, anchors, axis=0) if anchors > 1 else centers


class YuNetDetector:
    """OpenCV Zoo YuNet (2023mar). BGR input, outputs per stride 8/16/32.

    Images are fitted into 640 x 640 as always; a model converted with symbolic height/width
    (``converted_model(spatial=True)``) then runs on the fitted image padded only up to a multiple
    of 32, as OpenCV's FaceDetectorYN does, instead of on the full 640 x 640 canvas: a 250 px photo
    (fitted to 500 x 500 by the 2x upscale cap) costs 500² instead of 640², a 1080p photo 640 x 384.
    """

    name = "yunet"
    default_threshold = 0.6
    strides = (8, 16, 32)
    max_batch = 1  # the input size follows each image, so images do not stack

    def __init__(self, path: Path, providers: list[str], *, threads: int | None = None, nms_iou: float = 0.3):
        self.session = create_session(path, providers, threads=threads)
        shape = self.session.get_inputs()[0].shape
        self.input_name = self.session.get_inputs()[0].name
        # Any size on CPU only: accelerators (TensorRT above all) want one fixed shape, built once.
        symbolic = not (isinstance(shape[2], int) and isinstance(shape[3], int))
        self.any_size = symbolic and providers[0] == "CPUExecutionProvider"
        self.height, self.width = (640, 640) if self.any_size else (int(shape[2]), int(shape[3]))
        self.nms_iou = nms_iou
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._grids: dict[tuple[int, int, int], np.ndarray] = {}

    def _centers(self, rows: int, cols: int, stride: int) -> np.ndarray:
        key = (rows, cols, stride)
        if key not in self._grids:
            if len(self._grids) > 256:  # many distinct photo sizes: keep the cache bounded
                self._grids.clear()
            self._grids[key] = _grid(rows, cols, stride, 1)
        return self._grids[key]

    def detect_many(self, images: list[np.ndarray], threshold: float) -> list[Detections]:
        return [self.detect(rgb, threshold) for rgb in images]

    @classmethod
    def from_pack(cls, context: LoadContext, ref: ModelRef, **options: Any) -> Self:
        """YuNet's input size is fixed by the file, so ``input_size`` is not an option here."""
        options.pop("input_size", None)
        return cls(context.path(ref.file), context.providers, threads=context.threads, **options)

    def detect(self, rgb: np.ndarray, threshold: float) -> Detections:
        canvas, back = letterbox(rgb, self.width, self.height, multiple=32 if self.any_size else None)
        blob = np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
        rows, cols = canvas.shape[:2]
        outputs = dict(
            zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob}), strict=True)
        )
        boxes, scores, points = [], [], []
        for stride in self.strides:
            cls = np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            mask = score >= threshold
            if not mask.any():
                continue
            grid = self._centers(rows // stride, cols // stride, stride)[mask]
            bbox = outputs[f"bbox_{stride}"][0][mask]
            kps = outputs[f"kps_{stride}"][0][mask].reshape(-1, 5, 2)
            centers = grid + bbox[:, :2] * stride
            sizes = np.exp(bbox[:, 2:]) * stride
            boxes.append(np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1))
            points.append(grid[:, None, :] + kps * stride)
            scores.append(score[mask])
        if not scores:
            return Detections.empty()
        found = Detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(points))
        return found.take(nms(found.boxes, found.scores, self.nms_iou)).scaled(back)


class SCRFDDetector:
    """InsightFace SCRFD (with keypoints). RGB (x-127.5)/128 input; any size that is a multiple of 32.

    On an accelerator the file is converted once to a symbolic batch dimension (InsightFace exports
    it fixed at 1 but flattens every output to rows of batch x anchors), and :meth:`detect_many`
    runs up to ``max_batch`` photos, letterboxed to the one fixed input size, in a single call.
    InsightFace's export transposes (N, C, H, W) to (H, W, N, C) before flattening, so the rows of
    one image are interleaved per location; a file that keeps N first is read batch-major.
    """

    anchors = 2  # per location and stride

    name = "scrfd"
    default_threshold = 0.5
    strides = (8, 16, 32)

    def __init__(
        self,
        path: Path,
        providers: list[str],
        *,
        threads: int | None = None,
        input_size: tuple[int, int] = (640, 640),
        nms_iou: float = 0.4,
        batched: bool | None = None,
        max_batch: int = 16,
    ):
        width, height = input_size
        if width % 32 or height % 32 or width <= 0 or height <= 0:
            raise ModelConfigError(f"SCRFD input size must be positive multiples of 32, got {width}x{height}")
        if batched is None:  # batches pay off on accelerators; on CPU a batch costs what its images do
            batched = providers[0] != "CPUExecutionProvider"
        if batched:
            from faceatlas.models.convert import converted_model
            from faceatlas.models.store import cache_dir

            path = converted_model(path, cache_dir() / "converted", expected_sha256=None, batchable=True)
        self.session = create_session(path, providers, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.max_batch = max_batch if not isinstance(shape[0], int) else 1
        self.location_major = self.max_batch > 1 and _transposes_batch_inwards(path)
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            height, width = int(shape[2]), int(shape[3])  # a file exported with a fixed size wins
        self.width, self.height = width, height
        self.output_names = [o.name for o in self.session.get_outputs()]
        if len(self.output_names) != 9:
            raise ModelConfigError(
                f"{path}: expected an SCRFD model with keypoints (9 outputs), got {len(self.output_names)}"
            )
        self.nms_iou = nms_iou
        self._grids: dict[tuple[int, int, int], np.ndarray] = {}
        self.name = f"scrfd.{Path(path).stem}"

    @classmethod
    def from_pack(cls, context: LoadContext, ref: ModelRef, **options: Any) -> Self:
        source = context.path(ref.file)
        return cls(source, context.providers, threads=context.threads, **options)

    def _anchor_centers(self, rows: int, cols: int, stride: int) -> np.ndarray:
        key = (rows, cols, stride)
        if key not in self._grids:
            self._grids[key] = _grid(rows, cols, stride, self.anchors)
        return self._grids[key]

    def _blob(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        canvas, back = letterbox(rgb, self.width, self.height)
        blob = (canvas.astype(np.float32) - 127.5) / 128.0
        return blob.transpose(2, 0, 1), back

    def detect(self, rgb: np.ndarray, threshold: float) -> Detections:
        blob, back = self._blob(rgb)
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob[None])})
        return self._decode(outputs, threshold, back)

    def detect_many(self, images: list[np.ndarray], threshold: float) -> list[Detections]:
        """:meth:`detect` of every image, ``max_batch`` images per network call."""
        if self.max_batch == 1:
            return [self.detect(rgb, threshold) for rgb in images]
        found: list[Detections] = []
        for start in range(0, len(images), self.max_batch):
            blobs, backs = zip(
                *(self._blob(rgb) for rgb in images[start : start + self.max_batch]), strict=True
            )
            outputs = self.session.run(self.output_names, {self.input_name: np.stack(blobs)})
            for i, back in enumerate(backs):
                mine = [self._rows_of(out, i, len(blobs)) for out in outputs]
                found.append(self._decode(mine, threshold, back))
        return found

    def _rows_of(self, output: np.ndarray, image: int, batch: int) -> np.ndarray:
        """Image ``image``'s rows of a (batch x anchors, k) output."""
        k = output.shape[-1]
        rows: np.ndarray
        if self.location_major:  # rows ordered (row, column, image, anchor)
            rows = output.reshape(-1, batch, self.anchors, k)[:, image].reshape(-1, k)
        else:
            rows = output.reshape(batch, -1, k)[image]
        return rows

    def _decode(self, outputs: list[np.ndarray], threshold: float, back: float) -> Detections:
        boxes, scores, points = [], [], []
        for level, stride in enumerate(self.strides):
            score = outputs[level].reshape(-1)
            distances = outputs[level + 3].reshape(-1, 4) * stride
            kps = outputs[level + 6].reshape(-1, 5, 2) * stride
            centers = self._anchor_centers(
                self.height // stride, self.width // stride, stride
            )  # 2 per location
            mask = score >= threshold
            if not mask.any():
                continue
            c = centers[mask]
            d = distances[mask]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            points.append(c[:, None, :] + kps[mask])
            scores.append(score[mask])
        if not scores:
            return Detections.empty()
        found = Detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(points))
        return found.take(nms(found.boxes, found.scores, self.nms_iou)).scaled(back)
