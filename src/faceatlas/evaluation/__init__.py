"""Accuracy evaluation with the standard protocols (LFW, WIDER FACE, clustering) and per-pack calibration.

The metric modules (``metrics``, ``wider``, ``cluster_metrics``, ``calibration``) are pure NumPy; ``runs``
drives an :class:`~faceatlas.engine.Engine` over a data set and is what the ``faceatlas eval`` CLI calls.
"""
