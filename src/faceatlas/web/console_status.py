"""The console's status report: the loaded pack, its models and versions, providers, plugins, and what a
CompreFace similarity means for this pack (FAR/TAR on LFW at 0.5 ... 0.99)."""

from __future__ import annotations

from typing import Any

import onnxruntime

from faceatlas.evaluation.similarity_table import load_similarity_table


def status_report(state: Any) -> dict[str, Any]:
    """Everything the status page shows, as JSON-ready data (``state`` is the server's state)."""
    from faceatlas import __version__

    engine = state.engine
    pack = engine.pack
    spec = engine.spec
    models: list[dict[str, Any]] = [
        {"role": "detector", "name": pack.detector_name, "file": spec.detector_file.filename,
         "sha256": spec.detector_file.sha256},
        {"role": "recognizer", "name": pack.recognizer_name, "file": spec.recognizer_file.filename,
         "sha256": spec.recognizer_file.sha256, "embedding_size": pack.embedding_size},
    ]  # fmt: skip
    for model in engine.attribute_models:
        models.append({"role": ", ".join(sorted(model.provides)), "name": model.name})
    table = load_similarity_table(pack.id)
    return {
        "build_version": __version__,
        "onnxruntime": onnxruntime.__version__,
        "providers": list(engine.providers),
        "pack": {
            "id": pack.id,
            "version": pack.version,
            "description": spec.description,
            "licence": spec.licence,
            "threshold": pack.threshold,
            "c0": pack.c0,
            "c1": pack.c1,
            "calibration": pack.calibration_source,
        },
        "models": models,
        "plugins": {
            "detector": f"faceatlas.{pack.detector_name}",
            "calculator": f"faceatlas.Calculator@{pack.id}",
            **{name: f"faceatlas.{name}" for name in pack.plugins},
        },
        "similarity_table": table,
    }
