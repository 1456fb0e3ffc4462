"""ONNX Runtime sessions: provider selection, thread counts, one place that builds sessions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from faceatlas.errors import ModelError, ProviderUnavailableError

# Short names users type, mapped to ONNX Runtime's provider identifiers.
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "directml": "DmlExecutionProvider",
}


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """Map requested names to ONNX Runtime providers, failing loudly for any that is missing.

    A requested accelerator that is not available is an error, never a silent CPU fallback: a
    user who asked for CUDA and gets CPU would see 20x slower answers with no explanation.
    CPU is appended last so that operators an accelerator cannot run still have a home.
    """
    if not requested:
        requested = ("cpu",)
    available = ort.get_available_providers()
    resolved: list[str] = []
    for name in requested:
        provider = PROVIDER_ALIASES.get(name.lower(), name)
        if provider not in available:
            raise ProviderUnavailableError(
                f"execution provider {name!r} ({provider}) is not available in this onnxruntime build "
                f"(available: {', '.join(available)}); install the matching onnxruntime package "
                f"(e.g. onnxruntime-gpu for CUDA) or ask for 'cpu'"
            )
        if provider not in resolved:
            resolved.append(provider)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")
    return resolved


def default_threads() -> int:
    env = os.environ.get("FACEATLAS_THREADS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def create_session(
    model: str | Path | bytes, providers: Sequence[str], *, threads: int | None = None
) -> ort.InferenceSession:
    """An inference session with the given (already resolved) providers and intra-op thread count."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Spinning worker threads win a few ms on an idle machine but cost ~3x when requests, decode
    # workers and BLAS compete for 2 cores, which is the normal case for a server or an indexer.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as error:  # ORT raises its own exception types; surface them as ours
        name = "<bytes>" if isinstance(model, bytes) else str(model)
        raise ModelError(f"cannot load ONNX model {name}: {error}") from error
