"""ONNX Runtime sessions: provider selection, thread counts, one place that builds sessions.

Thread counts adapt to load when asked (``threads=ADAPTIVE_THREADS``, the server's default): every
model then has a wide session (one intra-op thread per core) and a one-thread session, and each
call takes the wide one only while it is the only inference in flight in the process. A lone
request gets every core (lower latency); concurrent requests get one core each (no oversubscribed
thread pools, so throughput does not drop). ONNX Runtime fixes the thread count per session, hence
two sessions (the weights are held twice: ~40 MB more for the default pack).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


#: ``threads`` value asking for load-adaptive sessions (see the module docstring).
ADAPTIVE_THREADS = -1

#: GPU memory ONNX Runtime's CUDA arena may hold per session (FACEATLAS_GPU_MEM_MB overrides): the
#: default arena grows to whatever the largest batch once needed and never gives it back.
DEFAULT_GPU_MEMORY_MB = 2048


class _Load:
    """Inferences in flight in this process: engine calls (scopes) and bare session runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scopes = 0
        self.runs = 0

    def change(self, attribute: str, delta: int) -> int:
        with self._lock:
            value: int = getattr(self, attribute) + delta
            setattr(self, attribute, value)
            return value

    @property
    def busiest(self) -> int:
        return max(self.scopes, self.runs)


LOAD = _Load()


@contextlib.contextmanager
def inference_scope() -> Iterator[None]:
    """Mark one caller's inference (e.g. one request's analyze) as in flight for adaptive sessions.

    Counting whole calls, not single session runs, keeps a request that is between two models
    (decoding, aligning) from being overlooked by a concurrent one that would then take every core.
    """
    LOAD.change("scopes", 1)
    try:
        yield
    finally:
        LOAD.change("scopes", -1)


class AdaptiveSession:
    """A wide (``wide_threads``) and a one-thread session of one model, picked per call by the load."""

    def __init__(self, wide: ort.InferenceSession, narrow: ort.InferenceSession) -> None:
        self.wide, self.narrow = wide, narrow
        self.runs = {"wide": 0, "narrow": 0}  # how often each was taken (benchmarks, tests)

    def get_inputs(self) -> Any:
        return self.narrow.get_inputs()

    def get_outputs(self) -> Any:
        return self.narrow.get_outputs()

    def get_providers(self) -> list[str]:
        return list(self.narrow.get_providers())

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[Any]:
        running = LOAD.change("runs", 1)
        try:
            kind = "wide" if max(running, LOAD.scopes) <= 1 else "narrow"
            self.runs[kind] += 1
            outputs: list[Any] = (self.wide if kind == "wide" else self.narrow).run(output_names, feeds)
            return outputs
        finally:
            LOAD.change("runs", -1)


def default_threads() -> int:
    env = os.environ.get("FACEATLAS_THREADS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def provider_options(providers: Sequence[str]) -> list[str | tuple[str, dict[str, str]]]:
    """Providers with the options faceatlas runs them with: a bounded memory arena on GPUs.

    CUDA: the arena grows only by what is asked for (``kSameAsRequested``) up to
    ``FACEATLAS_GPU_MEM_MB``; cuDNN picks convolution algorithms heuristically (an exhaustive search
    would rerun for every new input shape, e.g. each batch size). TensorRT: the
    same memory bound for its workspace, FP16 where the GPU has it, engines cached next to the
    converted models so the minutes-long build happens once.
    """
    from faceatlas.models.store import cache_dir

    limit = str(int(os.environ.get("FACEATLAS_GPU_MEM_MB", DEFAULT_GPU_MEMORY_MB)) * 1024 * 1024)
    device = os.environ.get("FACEATLAS_GPU_DEVICE", "0")
    configured: list[str | tuple[str, dict[str, str]]] = []
    for provider in providers:
        if provider == "CUDAExecutionProvider":
            configured.append(
                (
                    provider,
                    {
                        "device_id": device,
                        "gpu_mem_limit": limit,
                        "arena_extend_strategy": "kSameAsRequested",
                        "cudnn_conv_algo_search": "HEURISTIC",
                        "do_copy_in_default_stream": "1",
                    },
                )
            )
        elif provider == "TensorrtExecutionProvider":
            configured.append(
                (
                    provider,
                    {
                        "device_id": device,
                        "trt_max_workspace_size": limit,
                        "trt_fp16_enable": "True",
                        "trt_engine_cache_enable": "True",
                        "trt_engine_cache_path": str(cache_dir() / "tensorrt"),
                    },
                )
            )
        else:
            configured.append(provider)
    return configured


def create_session(
    model: str | Path | bytes, providers: Sequence[str], *, threads: int | None = None
) -> ort.InferenceSession | AdaptiveSession:
    """An inference session with the given (already resolved) providers and intra-op thread count.

    ``threads=ADAPTIVE_THREADS``: an :class:`AdaptiveSession` (wide when alone, one thread under load);
    on an accelerator, where CPU threads barely matter, a plain one-thread session.
    """
    if threads == ADAPTIVE_THREADS:
        narrow = _session(model, providers, 1)
        wide_threads = default_threads()
        if wide_threads == 1 or providers[0] != "CPUExecutionProvider":
            return narrow
        return AdaptiveSession(_session(model, providers, wide_threads), narrow)
    return _session(model, providers, threads or default_threads())


def _session(model: str | Path | bytes, providers: Sequence[str], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Spinning worker threads win a few ms on an idle machine but cost ~3x when requests, decode
    # workers and BLAS compete for 2 cores, which is the normal case for a server or an indexer.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=provider_options(providers))
    except Exception as error:  # ORT raises its own exception types; surface them as ours
        name = "<bytes>" if isinstance(model, bytes) else str(model)
        raise ModelError(f"cannot load ONNX model {name}: {error}") from error
