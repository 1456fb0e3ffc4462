"""An int8 screen in front of the exact index's product: the same answers, a quarter of the bytes read.

At 1 M x 512 the float32 product reads 2 GB for every query, ~100 ms on 2 cores however it is
computed, because memory bandwidth bounds it. The screen keeps each stored row a second time as int8
codes (the row over its own scale, rounded: a quarter of the bytes) and scores a query against all
of them with ONNX Runtime's integer product (``MatMulInteger``, uint8 query x int8 rows, ~20 ms at
1 M x 512). Only the rows that the codes cannot rule out are then scored on the stored rows, so the
answer is the exact one and not an approximation:

    a row x = x̂ + r (x̂: its codes times its scale), a query q = q̂ + e, so
    |q·x − q̂·x̂| ≤ ‖e‖·‖x̂‖ + ‖q‖·‖r‖ ≤ slack          (Cauchy–Schwarz, both terms)

If k rows (of k different groups, for one result per group) screen at ≥ t, the k-th best exact
score is ≥ t − slack, and a row screening below t − 2·slack scores exactly below that: it cannot be
among the k best. With per-row scales the slack is ~0.02 at 512-d; measured at 1 M x 512 (top 5), a
median of 11 rows is left to score exactly for a photo of a stored person and 275 for a stranger's
(at most 932, one result a person).

Layout: the codes are one column per row (``[dim, capacity]``), because ONNX Runtime's fast path
(u8 x s8 with VNNI) takes the rows as the right-hand matrix: measured at 1 M x 512, 20 ms this way,
90 ms with the rows as the left-hand matrix, and 42 ms when the query's zero point is an input (so
the query's +128 offset is taken off afterwards with each row's code sum). A removal does not move
a column (that would touch one page per dimension of a memory-mapped file): the row that moved into
the hole is marked stale and scored exactly on every query until the stale rows are re-coded.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from faceatlas.index.base import best_first

#: An exact index screens from this many rows; below, its plain product takes a few milliseconds.
SCREEN_FROM = 20_000
#: rows quantised at once (bounds the float32 temporaries)
CODE_CHUNK = 32_768
#: the screened scores are split in blocks of this many rows; the k-th best block maximum is a floor
#: under the k-th best score, found without sorting a million values
BLOCK = 1_024
#: float32 rounding of the screened and the exact products, added to the slack
ROUNDING = 1e-4
#: stale rows are re-coded once there are more than this many (or a 64th of the rows)
STALE_LIMIT = 1_024
CODES_FILE = "screen-codes.npy"
SCALES_FILE = "screen-scales.npy"
SUMS_FILE = "screen-sums.npy"

_session_lock = threading.Lock()
_session: Any = None


def _integer_product() -> Any:
    """The process's one ONNX Runtime session for every screen: Y[b, n] = A[b, d] (uint8) · B[d, n] (int8)."""
    global _session
    with _session_lock:
        if _session is None:
            from onnx import TensorProto, helper

            from faceatlas.models.runtime import ADAPTIVE_THREADS, create_session

            graph = helper.make_graph(
                [helper.make_node("MatMulInteger", ["queries", "codes"], ["products"])],
                "int8_screen",
                [
                    helper.make_tensor_value_info("queries", TensorProto.UINT8, ["batch", "dim"]),
                    helper.make_tensor_value_info("codes", TensorProto.INT8, ["dim", "rows"]),
                ],
                [helper.make_tensor_value_info("products", TensorProto.INT32, ["batch", "rows"])],
            )
            # IR 8 / opset 13: what every ONNX Runtime from 1.18 (the lowest we allow) reads
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
            # every core while it is the process's only inference, one under load (as the models)
            providers = ["CPUExecutionProvider"]
            _session = create_session(model.SerializeToString(), providers, threads=ADAPTIVE_THREADS)
        return _session


def _quantised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scale, residual norm, norm of codes x scale) of each float32 row, codes in [-127, 127]."""
    scale = (np.maximum(rows.max(axis=1), -rows.min(axis=1)) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    approx = rows / safe[:, None]
    np.rint(approx, out=approx)
    codes = approx.astype(np.int8)
    approx *= safe[:, None]
    residual = rows - approx
    return codes, scale, _norms(residual), _norms(approx)


def _norms(rows: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", rows, rows))


class Int8Screen:
    """The int8 codes of an exact index's rows, kept in step with its matrix (positions are shared)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.codes = np.zeros((dim, 0), np.int8)
        self.scales = np.zeros(0, np.float32)
        #: 128 x the sum of a row's codes: the query's codes are offset by 128 to be uint8
        self.offsets = np.zeros(0, np.int32)
        self.stale = np.zeros(0, bool)
        #: the largest residual norm and coded-row norm of any row written (bounds of the slack)
        self.residual = 0.0
        self.code_norm = 0.0

    def resize(self, capacity: int, used: int) -> None:
        codes = np.zeros((self.dim, capacity), np.int8)
        codes[:, :used] = self.codes[:, :used]
        self.codes = codes
        for name in ("scales", "offsets", "stale"):
            old = getattr(self, name)
            new = np.zeros(capacity, old.dtype)
            new[:used] = old[:used]
            setattr(self, name, new)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Code ``rows`` (any float dtype) into positions ``start`` onwards."""
        for begin in range(0, len(rows), CODE_CHUNK):
            block = rows[begin : begin + CODE_CHUNK]
            self._store(slice(start + begin, start + begin + len(block)), block)

    def moved(self, position: int) -> None:
        """Another row now sits at ``position``: its codes are not there (see the module docstring)."""
        self.stale[position] = True

    def recode_stale(self, matrix: np.ndarray, used: int, *, force: bool = False) -> None:
        """Re-code the stale rows once there are many (``force``: any)."""
        stale = np.flatnonzero(self.stale[:used])
        if len(stale) == 0 or (not force and len(stale) <= max(STALE_LIMIT, used // 64)):
            return
        for begin in range(0, len(stale), CODE_CHUNK):
            positions = stale[begin : begin + CODE_CHUNK]
            self._store(positions, matrix[positions])

    def _store(self, at: slice | np.ndarray, rows: np.ndarray) -> None:
        """Code ``rows`` into the positions ``at`` (a run of them, or any)."""
        codes, scale, residual, norm = _quantised(np.asarray(rows, np.float32))
        if len(codes) == 0:
            return
        if isinstance(at, slice):
            for first in range(0, len(codes), BLOCK):  # transposed a cache-sized block at a time
                part = codes[first : first + BLOCK]
                self.codes[:, at.start + first : at.start + first + len(part)] = part.T
        else:
            self.codes[:, at] = codes.T
        self.scales[at] = scale
        self.offsets[at] = 128 * codes.sum(axis=1, dtype=np.int32)
        self.stale[at] = False
        self.residual = max(self.residual, float(residual.max()))
        self.code_norm = max(self.code_norm, float(norm.max()))

    def candidates(
        self, queries: np.ndarray, used: int, k: int, groups: np.ndarray, unique_groups: bool
    ) -> list[np.ndarray]:
        """For each unit query, the positions (of the first ``used``) that may be among its exact ``k``
        best (one a group with ``unique_groups``): every other row scores exactly below them."""
        codes, scale, error, _ = _quantised(queries)
        length = _norms(queries)
        feed = {"queries": (codes.astype(np.int16) + 128).astype(np.uint8), "codes": self.codes}
        products = _integer_product().run(None, feed)[0]
        stale = np.flatnonzero(self.stale[:used])
        out = []
        for row, query_scale, query_error, query_length in zip(products, scale, error, length, strict=True):
            screened = np.subtract(row[:used], self.offsets[:used]).astype(np.float32)
            screened *= self.scales[:used]
            screened *= query_scale
            screened[stale] = -np.inf
            slack = float(query_error) * self.code_norm + float(query_length) * self.residual + ROUNDING
            survivors = _survivors(screened, 2 * slack, k, groups[:used], unique_groups)
            out.append(np.union1d(survivors, stale) if len(stale) else survivors)
        return out

    # ----------------------------------------------------------------- persistence
    def save(self, folder: Path, used: int, capacity: int) -> dict[str, float]:
        """Write the codes of the first ``used`` rows (room for ``capacity``); the stale ones must
        have been re-coded (``recode_stale(force=True)``)."""
        codes = np.lib.format.open_memmap(folder / CODES_FILE, "w+", np.int8, (self.dim, capacity))
        codes[:, :used] = self.codes[:, :used]
        codes.flush()
        del codes
        for name, values in ((SCALES_FILE, self.scales), (SUMS_FILE, self.offsets)):
            padded = np.zeros(capacity, values.dtype)
            padded[:used] = values[:used]
            np.save(folder / name, padded)
        return {"residual": self.residual, "code_norm": self.code_norm}

    @classmethod
    def load(cls, folder: Path, dim: int, capacity: int, meta: dict[str, float]) -> Int8Screen | None:
        """The saved screen, mapped copy-on-write (shared like the matrix); None if the snapshot has none
        or its files do not fit the matrix (the caller then codes the rows again)."""
        if not all((folder / name).exists() for name in (CODES_FILE, SCALES_FILE, SUMS_FILE)):
            return None
        screen = cls(dim)
        screen.codes = np.load(folder / CODES_FILE, mmap_mode="c")
        screen.scales = np.load(folder / SCALES_FILE, mmap_mode="c")
        screen.offsets = np.load(folder / SUMS_FILE, mmap_mode="c")
        fits = (
            screen.codes.shape == (dim, capacity)
            and screen.codes.dtype == np.int8
            and screen.scales.shape == (capacity,)
            and screen.offsets.shape == (capacity,)
            and screen.offsets.dtype == np.int32
        )
        if not fits:
            return None
        screen.stale = np.zeros(capacity, bool)
        screen.residual = float(meta["residual"])
        screen.code_norm = float(meta["code_norm"])
        return screen


def _survivors(
    screened: np.ndarray, margin: float, k: int, groups: np.ndarray, unique_groups: bool
) -> np.ndarray:
    """Positions screening within ``margin`` of the k-th best (of distinct groups) screened score."""
    blocks = len(screened) // BLOCK
    if blocks >= k:
        maxima = screened[: blocks * BLOCK].reshape(blocks, BLOCK).max(axis=1)
        floor = float(np.partition(maxima, blocks - k)[blocks - k])  # k rows screen at >= floor
        near = np.flatnonzero(screened >= floor - margin)
        top = best_first(screened[near], groups[near], k, unique_groups)
        if len(top) == k:
            kth = float(screened[near[top[-1]]])
            # without groups kth >= floor always; with them, the k groups may reach below the floor
            if kth >= floor:
                return near[screened[near] >= kth - margin]
    top = best_first(screened, groups, k, unique_groups)
    if len(top) < k or not np.isfinite(screened[top[-1]]):
        return np.arange(len(screened))
    return np.flatnonzero(screened >= float(screened[top[-1]]) - margin)
