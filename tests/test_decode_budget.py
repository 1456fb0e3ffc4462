"""Decoding under a memory budget: the estimate refuses pixel bombs from the header, strip-wise
conversion gives the pixels of a whole-image conversion, and the shared budget keeps room for small
images while large ones take turns."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from faceatlas.errors import DecompressionBombError
from faceatlas.images import DecodeBudget, _to_rgb, _to_rgb_array, decode_image, decode_memory
from tests.reliability.support import png_bomb

MB = 1024 * 1024


def test_a_pixel_bomb_is_refused_from_its_header(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = png_bomb(tmp_path / "bomb.png", 10000, 9999).read_bytes()
    assert len(data) < 1 * MB
    needed = decode_memory(data, target_size=640)
    assert needed > 700 * MB  # 100 MP of RGBA: at least Pillow's 4 bytes and the RGB result's 3
    started = time.perf_counter()
    with pytest.raises(DecompressionBombError, match="memory"):
        decode_image(data, target_size=640, max_memory=384 * MB)
    assert time.perf_counter() - started < 1.0  # refused before any pixel is decoded
    with pytest.raises(DecompressionBombError, match="memory"):
        decode_memory(data, target_size=640, max_memory=384 * MB)


def test_a_large_jpeg_is_estimated_after_its_dct_reduction() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4000, 6000, 3), np.uint8)).save(buffer, "JPEG", quality=50)
    assert decode_memory(buffer.getvalue(), target_size=640) < decode_memory(buffer.getvalue()) / 20


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I", "I;16", "RGB"])
def test_strips_convert_exactly_like_the_whole_image(mode: str) -> None:
    rng = np.random.default_rng(3)
    height, width = 1900, 2400  # over the 4 MP strip threshold
    if mode in ("RGBA", "RGB"):
        im = Image.fromarray(rng.integers(0, 256, (height, width, len(mode)), np.uint8), mode)
    elif mode == "LA":
        im = Image.fromarray(rng.integers(0, 256, (height, width, 4), np.uint8), "RGBA").convert("LA")
    elif mode == "P":
        im = Image.fromarray(rng.integers(0, 256, (height, width), np.uint8), "L").convert("P")
        im.info["transparency"] = 7
    elif mode == "I":
        im = Image.fromarray(rng.integers(-5000, 90000, (height, width)).astype(np.int32))
    else:
        im = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    np.testing.assert_array_equal(_to_rgb(im), _to_rgb_array(im))


def test_large_decodes_take_turns_and_small_ones_never_wait_for_them() -> None:
    budget = DecodeBudget(512 * MB)  # one image may use 384 MB, 128 MB stay for small ones
    assert budget.max_single == 384 * MB and budget.small == 32 * MB
    events: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def large(name: str, hold: threading.Event | None) -> None:
        with budget.hold(300 * MB):
            events.append(f"{name} in")
            if hold is not None:
                first_in.set()
                hold.wait(10)
            events.append(f"{name} out")

    first = threading.Thread(target=large, args=("large1", release_first))
    first.start()
    assert first_in.wait(10)
    second = threading.Thread(target=large, args=("large2", None))
    second.start()
    time.sleep(0.2)
    assert events == ["large1 in"]  # the second large decode waits for the first
    with budget.hold(20 * MB):  # a small one does not
        events.append("small")
    release_first.set()
    first.join(10)
    second.join(10)
    assert events == ["large1 in", "small", "large1 out", "large2 in", "large2 out"]
    assert budget.in_use == 0 and budget.large_in_use == 0
    assert budget.try_acquire(384 * MB) and not budget.try_acquire(100 * MB)
    budget.release(384 * MB)
