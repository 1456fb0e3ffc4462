"""Five-point face alignment: similarity transforms to a template and one batched warp per image."""

from __future__ import annotations

import cv2
import numpy as np

# The standard 112x112 ArcFace template (image-left eye, image-right eye, nose, mouth corners).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (Umeyama) mapping each src (N,5,2) onto dst (5,2).

    Returns (N,2,3) forward matrices. Vectorised over faces.
    """
    src = np.asarray(src, dtype=np.float64)
    n, k = src.shape[0], src.shape[1]
    src_mean = src.mean(axis=1, keepdims=True)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    cov = np.einsum("kj,nki->nji", dst_c, src_c) / k  # (N,2,2): dst^T src
    u, s, vt = np.linalg.svd(cov)
    d = np.ones((n, 2))
    d[np.linalg.det(u) * np.linalg.det(vt) < 0, 1] = -1
    rotation = np.einsum("nij,nj,njk->nik", u, d, vt)
    src_var = (src_c**2).sum(axis=(1, 2)) / k
    scale = np.einsum("ni,ni->n", s, d) / np.maximum(src_var, 1e-12)
    translation = dst_mean - scale[:, None] * np.einsum("nij,nj->ni", rotation, src_mean[:, 0, :])
    return np.concatenate([scale[:, None, None] * rotation, translation[:, :, None]], axis=2)


def warp_faces(rgb: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """Warp N faces out of one image in a single remap call: (N,2,3) forward matrices -> (N,size,size,3)."""
    n = len(matrices)
    if n == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    forward = np.concatenate([matrices, np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], axis=1)
    inverse = np.linalg.inv(forward)[:, :2, :]  # (N,2,3): chip pixel -> image pixel
    ys, xs = np.mgrid[:size, :size].astype(np.float64)
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)])  # (3, size*size)
    coords = inverse @ grid  # (N,2,size*size)
    map_x = coords[:, 0].reshape(n * size, size).astype(np.float32)
    map_y = coords[:, 1].reshape(n * size, size).astype(np.float32)
    # cv2.remap takes maps of at most SHRT_MAX rows: 292 faces of 112 px per call.
    rows = (np.iinfo(np.int16).max - 1) // size * size
    chips = np.concatenate(
        [
            cv2.remap(
                rgb,
                map_x[i : i + rows],
                map_y[i : i + rows],
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
            )
            for i in range(0, n * size, rows)
        ]
    )
    return chips.reshape(n, size, size, 3)


def align_faces(rgb: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """Crops aligned so each face's 5 landmarks land on ``template`` (given for a ``size`` chip)."""
    return warp_faces(rgb, similarity_transforms(landmarks, template), size)
