"""Five-point alignment: the batched remap equals per-face warpAffine, for any number of faces."""

from __future__ import annotations

import cv2
import numpy as np

from faceatlas.models.alignment import ARCFACE_TEMPLATE, align_faces, similarity_transforms


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = np.deg2rad(20), 1.7, np.array([13.0, -4.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = (ARCFACE_TEMPLATE - shift) @ np.linalg.inv(rotation).T  # points that map onto the template
    matrix = similarity_transforms(source[None], ARCFACE_TEMPLATE)[0]
    assert np.allclose(source @ matrix[:, :2].T + matrix[:, 2], ARCFACE_TEMPLATE, atol=1e-9)


def test_batched_warp_equals_warp_affine_beyond_the_remap_row_limit() -> None:
    rng = np.random.default_rng(0)
    # Smooth content: both warps quantise sample positions to 1/32 px, which is invisible here.
    image = cv2.GaussianBlur(rng.integers(0, 255, (400, 600, 3), dtype=np.uint8), (0, 0), 3)
    count = 300  # 300 x 112 rows is over cv2.remap's 32767-row limit for one call
    centres = rng.uniform([150, 150], [450, 250], (count, 1, 2))
    landmarks = centres + (ARCFACE_TEMPLATE - ARCFACE_TEMPLATE.mean(0)) * rng.uniform(0.8, 1.5, (count, 1, 1))
    crops = align_faces(image, landmarks, ARCFACE_TEMPLATE, 112)
    assert crops.shape == (count, 112, 112, 3)
    matrices = similarity_transforms(landmarks, ARCFACE_TEMPLATE)
    for i in (0, 150, 291, 292, 299):
        expected = cv2.warpAffine(image, matrices[i], (112, 112), flags=cv2.INTER_LINEAR)
        assert np.abs(crops[i].astype(int) - expected.astype(int)).max() <= 1, i
