"""Input images at the door of the API: file paths or arrays in, RGB uint8 HxWx3 out."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import InvalidImageError

ImageInput = str | os.PathLike | np.ndarray


def _read_image_file(path: Path) -> np.ndarray:
    """Decode with PIL as the reference loaders do, upright (EXIF orientation applied), alpha dropped."""
    if not path.is_file():
        raise InvalidImageError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB")).copy()
    except (OSError, ValueError) as error:
        raise InvalidImageError(f"cannot decode image file {path} ({error}); is it a PNG/JPEG image?") from error


def _check_array(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise InvalidImageError(
            f"image {index} is single-channel {image.shape}; the models need colour images: convert "
            "with cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (drop the alpha channel: image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise InvalidImageError(f"image {index} has shape {image.shape}; expected HxWx3{hint}")
    if image.dtype != np.uint8:
        raise InvalidImageError(
            f"image {index} has dtype {image.dtype}; expected uint8 in [0, 255] "
            "(for floats in [0, 1]: (image * 255).round().astype(np.uint8))"
        )
    if min(image.shape[:2]) < 2:
        raise InvalidImageError(f"image {index} is degenerate: {image.shape}")
    return image


def check_rgb_image(image: object, index: int) -> None:
    """Raise InvalidImageError unless `image` is what the stages take: an RGB uint8 HxWx3 array."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidImageError(
            f"image {index} must be an RGB uint8 HxWx3 array, got "
            f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
        )


def load_images(images: Sequence[ImageInput], rgb: bool = False) -> list[np.ndarray]:
    """Return the inputs as a list of contiguous RGB uint8 HxWx3 arrays.

    Arrays are taken as BGR (OpenCV's order) unless ``rgb=True``; files are decoded with
    PIL (EXIF orientation applied) and are always converted correctly, whatever `rgb` says.
    """
    if isinstance(images, (str, os.PathLike, np.ndarray)) and not (
        isinstance(images, np.ndarray) and images.ndim == 4
    ):
        images = [images]
    if images is None or len(images) == 0:
        raise InvalidImageError("empty window: reconstruction needs at least one image")
    converted = []
    for index, image in enumerate(images):
        if isinstance(image, (str, os.PathLike)):
            converted.append(_read_image_file(Path(image)))
            continue
        array = _check_array(image, index)
        converted.append(np.ascontiguousarray(array if rgb else array[..., ::-1]))
    return converted
