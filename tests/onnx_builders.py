"""Small ONNX models with the interfaces of InsightFace's files, built by the tests (the real weights
cannot be downloaded here). Random but seeded weights: outputs depend on the input pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _conv_head(name: str, size: int, outputs: int, seed: int) -> onnx.GraphProto:
    """input [N,3,size,size] -> Conv(stride 8) -> Relu -> Flatten -> Gemm -> [N,outputs]."""
    rng = np.random.default_rng(seed)
    cells = (size // 8) ** 2 * 8
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 8, 8)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 0.05, (cells, outputs)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.05, (outputs,)).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["c"], strides=[8, 8], kernel_shape=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"]),
    ]
    return helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["None", outputs])],
        weights,
    )


def arcface_like(path: Path) -> Path:
    """112x112 RGB -> 512-d, like w600k_*.onnx / glintr100.onnx."""
    return _save(_conv_head("arcface_like", 112, 512, 1), path)


def genderage_like(path: Path) -> Path:
    """96x96 -> (female, male, age/100), like genderage.onnx."""
    return _save(_conv_head("genderage_like", 96, 3, 2), path)


def landmark106_like(path: Path) -> Path:
    """192x192 -> 212 values (x, y pairs in crop units of half the input), like 2d106det.onnx."""
    return _save(_conv_head("landmark106_like", 192, 212, 3), path)
