"""One-time conversion of the block-quantized OpenCV Zoo models into graphs ONNX Runtime can run.

The int8 block-quantized YuNet and SFace files keep weights as ``DequantizeLinear(block_size=…)``
of constants, which ONNX Runtime refuses ("block_size must be 0 for per-tensor quantization").
Those nodes only ever see constants, so we evaluate them (and the constant ``Reshape`` behind
them) once, store float32 weights, and cache the result keyed by the source file's hash.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceatlas.errors import ModelIntegrityError

if TYPE_CHECKING:
    import onnx


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_hash(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ModelIntegrityError(f"{path}: sha256 {actual} does not match the expected {expected}")


def _dequantize_blocked(
    x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int
) -> np.ndarray:
    values = x.astype(np.float32)
    if zero is not None:
        zero = zero.astype(np.float32)
    if block and scale.ndim == x.ndim and scale.shape != x.shape:
        axis = axis % x.ndim
        scale = np.repeat(scale, block, axis=axis).take(np.arange(x.shape[axis]), axis=axis)
        if zero is not None:
            zero = np.repeat(zero, block, axis=axis).take(np.arange(x.shape[axis]), axis=axis)
    elif scale.ndim == 1 and x.ndim > 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale = scale.reshape(shape)
        if zero is not None:
            zero = zero.reshape(shape)
    if zero is not None:
        values = values - zero
    return (values * scale.astype(np.float32)).astype(np.float32)


def fold_constant_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every DequantizeLinear/Reshape whose inputs are all constants with a float initializer."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    constants: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept_nodes = []
    for node in graph.node:
        inputs_constant = all(name == "" or name in constants for name in node.input)
        if node.op_type == "DequantizeLinear" and inputs_constant:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            zero = constants[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            constants[node.output[0]] = _dequantize_blocked(
                constants[node.input[0]],
                constants[node.input[1]],
                zero,
                attrs.get("axis", 1),
                attrs.get("block_size", 0),
            )
        elif node.op_type == "Reshape" and inputs_constant:
            data, shape = constants[node.input[0]], constants[node.input[1]].astype(np.int64)
            shape = np.where(
                shape == 0, np.array(data.shape[: len(shape)] + (0,) * (len(shape) - data.ndim)), shape
            )
            constants[node.output[0]] = data.reshape(shape)
        else:
            kept_nodes.append(node)
    used = {name for node in kept_nodes for name in node.input} | {out.name for out in graph.output}
    new_initializers = [
        numpy_helper.from_array(np.asarray(constants[name]), name)
        for name in sorted(used)
        if name in constants
    ]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_initializers)
    initializer_names = {init.name for init in new_initializers}
    graph_inputs = [inp for inp in graph.input if inp.name not in initializer_names and inp.name in used]
    del graph.input[:]
    graph.input.extend(graph_inputs)
    return model


def make_batch_symbolic(model: onnx.ModelProto, name: str = "batch") -> onnx.ModelProto:
    """Turn a fixed leading dimension of every graph input/output into a symbolic one."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = name
    # Stale intermediate shapes with batch 1 would otherwise confuse ONNX Runtime's shape inference.
    del model.graph.value_info[:]
    return model


def converted_model(
    source: Path, cache_dir: Path, *, expected_sha256: str | None, batchable: bool = False
) -> Path:
    """Return the path of the ONNX-Runtime-ready version of ``source``, converting it once."""
    if not source.is_file():
        raise FileNotFoundError(f"model file not found: {source}")
    key = expected_sha256 or sha256_file(source)
    target = cache_dir / f"{source.stem}.{key[:16]}.{'batch' if batchable else 'fixed'}.onnx"
    if target.is_file():
        return target
    import onnx  # only needed the first time a model is converted

    verify_hash(source, expected_sha256)
    model = fold_constant_dequantize(onnx.load(str(source)))
    if batchable:
        model = make_batch_symbolic(model)
    write_atomically(target, model.SerializeToString())
    return target


def write_atomically(target: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to a temporary file and rename it: concurrent processes never see half a file.

    The file is the owner's only (0600, as ``mkstemp`` makes it); ``private`` also makes a new folder
    owner-only, for caches that show private faces.
    """
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
