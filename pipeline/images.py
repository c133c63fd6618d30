"""THE conversion of an image file into the pixels a model takes, shared by preprocess and predict.

Preprocess converts every training image with `convert_image`, and predict converts every new
image with it too, reading the settings back from meta.json (`Conversion.for_model`): the two
cannot drift apart. One function, in this order:

1. Decode with Pillow, its decompression-bomb limit on (`Image.MAX_IMAGE_PIXELS`, ~89 megapixels;
   its warning counts as the error here), and no image above `MAX_PIXELS` once decoded.
   Plain 8-bit PNGs (L, RGB, RGBA; not interlaced, no palette, no transparency chunk, no EXIF) of up to
   `FAST_PNG_MAX_PIXELS` are decoded by libspng (pyspng) instead, after Pillow has read and checked
   their header: PNG is lossless, so the pixels are the same (tests/test_own_data.py checks every
   such mode), faster (BENCHMARKS.md, 3d). Anything libspng refuses goes to
   Pillow, so a file is refused, or not, exactly as Pillow alone would.
   JPEGs decode at a reduced scale (libjpeg's DCT scaling, Pillow's `draft`, as Pillow's own
   `thumbnail()` does) when they are more than `DRAFT_GAP` times the target's longer side: a
   512x512 photo for a 64x64 target decodes at 256x256, and a huge JPEG never fills memory.
   4x rather than thumbnail()'s 2x: at 2x, sharp edges blurred visibly (up to 0.16 on a 0..1
   scale in tests/test_predict.py's scanned digit), at 4x they stay within 0.05.
2. GIFs and other animations: the first frame. 16-bit grayscale: divided by 257 to 8 bits
   (Pillow's own conversion would clip it to white). Floating-point pixels (TIFF) are refused: they
   have no fixed range, and Pillow's conversion would make 0..1 black. Palette images: through their palette.
   Transparency (alpha, or a palette's transparent colour): composited on white.
3. To grayscale (Pillow's ITU-R 601-2 luma) or RGB.
4. Resized to (H, W) by area averaging (Pillow's BOX filter): each output pixel is the mean of the
   source pixels it covers, the way scikit-learn's 8x8 digits were made. The aspect ratio is not
   kept (the image is stretched), as in `keras.utils.image_dataset_from_directory`'s default.
5. Turned by its EXIF orientation tag (a phone photo taken sideways), after resizing, which gives
   the same pixels as turning first: the filter is symmetric.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    import pyspng
except ImportError:  # no wheel for the platform (Intel Macs): Pillow decodes every PNG, to the same pixels
    pyspng = None

from pipeline.errors import PipelineError
from pipeline.io.reading import read_limited
from pipeline.meta import DEFAULT_IMAGE_RECORD, ImageRecord, PreparedMeta

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_UNREADABLE = "in another format than PNG, JPEG, BMP, GIF, WebP, TIFF, or damaged"  # the formats IMAGE_SUFFIXES name
COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}
RESIZE_METHOD = "pillow-box"  # in meta.json (`meta.ImageRecord.resize`): a model says how its inputs were made
# Above this many pixels (after a JPEG's reduced decoding) an image is refused before it decodes: converting
# an RGBA PNG takes about a dozen bytes per pixel at its peak, so this bounds one image's memory to ~0.5 GB.
MAX_PIXELS = 40_000_000
# libspng decodes into its own array, which Pillow then copies: a few bytes per pixel more at the peak,
# so the fast path stops at photos of 4 megapixels and larger PNGs keep Pillow's smaller peak.
FAST_PNG_MAX_PIXELS = 4_000_000
FAST_PNG_MODES = ("L", "RGB", "RGBA")  # 8-bit modes libspng decodes to Pillow's layout (it has no 8-bit L+alpha)
# No image that MAX_PIXELS lets through needs more: 40 megapixels of 16-bit RGBA, uncompressed (TIFF), are 320 MB.
MAX_FILE_BYTES = 512 * 2**20
DRAFT_GAP = 4  # JPEGs decode at the smallest scale still >= DRAFT_GAP x the target (see the module docstring)

# EXIF orientation -> the transpose that shows the photo upright. Hand-written rather than PIL.ImageOps.exif_transpose:
# the turn comes after the resize (cheaper, same pixels), when the image no longer carries its EXIF.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Conversion:
    """How image files become pixels: the colour mode and the (height, width); size None = keep each image's own."""

    color_mode: str = "grayscale"
    size: tuple[int, int] | None = None

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    def record(self) -> ImageRecord:
        """What meta.json stores, so predict converts new images exactly so (the size is the input shape's)."""
        return ImageRecord(color_mode=self.color_mode, resize=RESIZE_METHOD)

    @classmethod
    def for_model(cls, meta: PreparedMeta) -> Conversion:
        """How new image files become what `meta`'s model takes: as preprocess converted its training images."""
        record = meta.image or DEFAULT_IMAGE_RECORD
        return cls(record.color_mode, (meta.input_shape[0], meta.input_shape[1]))


def read_image_file(path: Path | str, unreadable: str) -> bytes:
    """An image file's bytes, read bounded (`reading.read_limited`): a pipe named like an image is refused, not
    waited on; `unreadable` ends the sentence for a file that cannot be read."""
    return read_limited(
        path, MAX_FILE_BYTES, unreadable=unreadable,
        too_large="no image this pipeline decodes needs that much (pipeline/images.py, MAX_FILE_BYTES): "
        "downscale or recompress it.",
    )  # fmt: skip


def convert_image(source: bytes | Path | BinaryIO, conversion: Conversion, what: str) -> np.ndarray:
    """One image file's bytes (or path) -> uint8 pixels (H, W) for grayscale, (H, W, 3) for RGB.

    `what` names the file in the one-sentence error raised for anything that does not decode.
    """
    data = source if isinstance(source, bytes) else None
    if data is not None:
        source = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                return _to_pixels(image, conversion, what, data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PipelineError(f"{what} is too large to decode safely ({err}); downscale it before using it.") from None
    except UnidentifiedImageError:  # its message names a BytesIO object, not the file
        problem = "is empty (0 bytes)" if data == b"" else f"is not an image Pillow can read ({_UNREADABLE})"
        raise PipelineError(f"{what} {problem}; replace or delete the file.") from None
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's ways of saying "corrupt"
        raise PipelineError(f"{what} is not a readable image ({err}); replace or delete the file.") from None


def _decode_plain_png(image: Image.Image, data: bytes | None) -> Image.Image | None:
    """A plain 8-bit PNG's pixels decoded by libspng, or None where Pillow must decode it (see the module docstring).

    EXIF can sit after the pixel data, where only Pillow's full decode would find it: any file whose bytes
    hold the chunk name goes to Pillow (a false match in compressed data only costs speed).
    """
    if (
        data is None
        or pyspng is None
        or image.format != "PNG"
        or image.mode not in FAST_PNG_MODES
        or image.tile[0].args != image.mode  # the raw mode: "L;2" or "I;16B" are not 8-bit
        or "transparency" in image.info
        or image.info.get("interlace")
        or image.size[0] * image.size[1] > FAST_PNG_MAX_PIXELS
        or b"eXIf" in data
    ):
        return None
    try:
        return Image.fromarray(pyspng.load(data, image.mode))
    except RuntimeError:  # libspng's every refusal; Pillow then accepts the file or says why not
        return None


def _to_pixels(image: Image.Image, conversion: Conversion, what: str, data: bytes | None) -> np.ndarray:
    mode = COLOR_MODES[conversion.color_mode]
    if image.format == "JPEG" and conversion.size is not None:  # the EXIF turn may swap the axes: either is fine
        image.draft(mode, (max(conversion.size) * DRAFT_GAP,) * 2)
    if image.size[0] * image.size[1] > MAX_PIXELS:  # before anything decodes the pixels
        raise PipelineError(
            f"{what} is {image.size[0]}x{image.size[1]} pixels, more than the {MAX_PIXELS:,} this pipeline "
            "decodes (pipeline/images.py, MAX_PIXELS); downscale it before using it."
        )
    decoded = _decode_plain_png(image, data)
    if decoded is None:
        image.load()
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    else:
        image, orientation = decoded, 1
    if conversion.size is None:
        width, height = image.size
    else:  # the size to resize to before turning the image upright
        height, width = conversion.size[::-1] if orientation in _SWAPS_AXES else conversion.size
    if image.mode == "F":  # 32-bit floats (a TIFF of measurements): convert("L") would truncate 0..1 to black
        raise PipelineError(
            f"{what} holds floating-point pixels, which have no fixed range to map to 0..255; "
            "save it as an 8- or 16-bit image."
        )
    if image.mode.startswith("I"):
        # 16-bit grayscale: Pillow's convert("L") would clip every value above 255 to white.
        image = Image.fromarray(np.round(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        # Composited on white by pasting through the alpha channel: the same result as alpha_composite
        # (within one grey level), in about half the memory (~7 bytes per pixel at the peak instead of ~16).
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        image = Image.new(mode, rgba.size, "white")
        image.paste(rgba.convert(mode), mask=rgba.getchannel("A"))
        del rgba
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BOX)
    if orientation in _ORIENTATION:
        image = image.transpose(_ORIENTATION[orientation])
    return np.asarray(image, dtype=np.uint8)
