"""Frames: what an instance renders, as an answer (v2's GET /v2/envs/<id>/frame).

An ``rgb_array`` instance's frame is a PNG (Pillow) by default and a uint8 tensor in
msgpack; an ``ansi`` one's is text either way. A vector instance's frames, all at
once, are a grid (PNG), a stack with a leading sub-env axis (tensor), or the texts
one after another, each under a line naming its sub-env.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from envs_api.runtime import codecs

MODES = ("rgb_array", "ansi")  # render modes that give one frame of the current state
PNG_TYPE = "image/png"
TEXT_TYPE = "text/plain; charset=utf-8"
_CHANNELS = (3, 4)  # RGB, RGBA (a 2-D array is grey)


@dataclass(frozen=True)
class Frame:
    """What an instance rendered: one frame (an image array or a text), or, for all
    the sub-envs of a vector instance, a list of them."""

    mode: str  # "rgb_array" or "ansi"
    value: Any

    def body(self) -> tuple[bytes, str]:
        """The frame as sent by default: its bytes and their Content-Type."""
        if self.mode == "ansi":
            text = self.value if isinstance(self.value, str) else joined(self.value)
            return text.encode(), TEXT_TYPE
        one = isinstance(self.value, np.ndarray)
        return png(self.value if one else grid(self.value)), PNG_TYPE

    def wire(self) -> Any:
        """The frame as a msgpack value: a tensor (all sub-envs: stacked) or text."""
        if self.mode == "ansi":
            return self.value
        one = isinstance(self.value, np.ndarray)
        return codecs.tensor(self.value if one else np.stack(self.value))


def problem(mode: str, out: Any, count: int | None = None) -> str | None:
    """What keeps ``out``, an env's ``render()``, from being a frame of ``mode`` (or
    ``count`` of them, a vector env's); None when it is."""
    if count is not None:
        if not isinstance(out, tuple | list) or len(out) != count:
            return f"render() returned {_kind(out)}, not {count} frames"
        return next(filter(None, (problem(mode, item) for item in out)), None)
    if mode == "ansi":
        return (
            None
            if isinstance(out, str)
            else f"render() returned {_kind(out)}, not text"
        )
    image = isinstance(out, np.ndarray) and out.dtype == np.uint8
    if image and (out.ndim == 2 or (out.ndim == 3 and out.shape[2] in _CHANNELS)):
        return None
    return f"render() returned {_kind(out)}, not an image (uint8, of shape (H, W, 3))"


def copied(frame: Any) -> Any:
    """A frame of its own (an env may draw its next one into the same array)."""
    return frame.copy() if isinstance(frame, np.ndarray) else frame


def _kind(out: Any) -> str:
    if isinstance(out, np.ndarray):
        return f"a {out.dtype} array of shape {out.shape}"
    return "None" if out is None else f"a {type(out).__name__}"


def png(image: np.ndarray[Any, Any]) -> bytes:
    """An image array (H, W), (H, W, 3) or (H, W, 4) of uint8 as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def grid(images: list[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """The images (of one kind: a vector's sub-envs) tiled row by row, ceil(sqrt(n))
    to a row, in cells the size of the largest; what no image covers is black."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    out = np.zeros((rows * height, columns * width, *images[0].shape[2:]), np.uint8)
    for number, image in enumerate(images):
        top, left = divmod(number, columns)
        h, w = image.shape[:2]
        out[top * height : top * height + h, left * width : left * width + w] = image
    return out


def joined(texts: list[str]) -> str:
    """Texts one after another, each under a line naming its sub-env."""
    return "".join(
        f"--- sub-env {number} ---\n{text}" + ("" if text.endswith("\n") else "\n")
        for number, text in enumerate(texts)
    )
