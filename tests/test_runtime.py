"""Load-adaptive sessions: every core for a lone call, one thread each under concurrency, same results."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from faceatlas.engine import Engine
from faceatlas.models.runtime import ADAPTIVE_THREADS, AdaptiveSession, inference_scope, provider_options

PHOTO = "data/photos/face_recognition_examples/examples/obama.jpg"


@pytest.fixture(scope="module")
def adaptive() -> Engine:
    return Engine("sface", threads=ADAPTIVE_THREADS, attributes=False)


def test_lone_calls_go_wide_concurrent_calls_narrow(adaptive: Engine, engine: Engine, shared: Path) -> None:
    session = adaptive.recognizer.session
    if not isinstance(session, AdaptiveSession):
        pytest.skip("one CPU core: nothing to adapt")  # CI machines have more than one
    data = (shared / PHOTO).read_bytes()
    reference = engine.embed(data)
    before = dict(session.runs)
    np.testing.assert_allclose(adaptive.embed(data), reference, atol=1e-5)
    assert session.runs["wide"] == before["wide"] + 1 and session.runs["narrow"] == before["narrow"]

    with inference_scope():  # another request in flight
        np.testing.assert_allclose(adaptive.embed(data), reference, atol=1e-5)
    assert session.runs["narrow"] == before["narrow"] + 1

    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(adaptive.embed(data))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for vectors in results:
        np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_gpu_providers_get_a_bounded_arena(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEATLAS_GPU_MEM_MB", "512")
    configured = provider_options(
        ["CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"]
    )
    cuda, tensorrt, cpu = configured
    assert isinstance(cuda, tuple) and cuda[1]["gpu_mem_limit"] == str(512 * 1024 * 1024)
    assert cuda[1]["arena_extend_strategy"] == "kSameAsRequested"
    assert isinstance(tensorrt, tuple) and tensorrt[1]["trt_max_workspace_size"] == str(512 * 1024 * 1024)
    assert cpu == "CPUExecutionProvider"
