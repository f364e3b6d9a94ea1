"""User images to one RGB uint8 array: ``to_rgb_uint8`` takes a path, a PIL image, a numpy array or a
torch tensor (a ComfyUI IMAGE), or says exactly what is wrong with it.

Also the checks the rest of the package makes on images: ``check_rgb_uint8`` for code that needs the
converted array, and ``is_pil_image`` and ``is_torch_tensor``, which recognise those types (a tensor
without importing torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

# Photos smaller than this cannot hold a face the detectors find reliably.
MIN_IMAGE_SIDE = 64


def to_rgb_uint8(image) -> np.ndarray:
    """Any supported image -> contiguous RGB uint8 HxWx3 array.

    Accepts a path (str or Path; EXIF orientation applied), a PIL image of any mode, a numpy
    array (HxW, HxWx1, HxWx3, HxWx4; uint8, uint16, bool, or float in [0, 1]) or a torch tensor
    HxWxC float in [0, 1] (a ComfyUI IMAGE item; a batch of one is accepted too).

    Transparency is composited over white, not dropped: a cut-out portrait with its alpha
    dropped shows whatever colour the transparent pixels happen to store (often black), which
    both the face detector and the generator would take as the real background.

    Raises InputError for a missing or unreadable file, an unsupported type or shape, NaN
    values, or an image smaller than 64 px on a side.
    """
    if isinstance(image, (str, Path)):
        image = _open_image_file(Path(image))
    if is_pil_image(image):
        array = _pil_to_array(image)
    elif is_torch_tensor(image):
        array = _torch_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise InputError(
            f"Cannot use an image of type {type(image).__name__}",
            "pass a file path, a PIL image, a numpy array (HxWxC) or a torch tensor (HxWxC)",
        )
    array = _as_hwc(array)
    _check_size(array)
    return np.ascontiguousarray(_channels_to_rgb(_to_uint8(array)))


def _open_image_file(path: Path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise InputError(f"Image file not found: {path}", "check the path and file name")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image", "pass the path of one image file")
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now, so a truncated file fails here and not later
            # Phones store portrait photos sideways plus an EXIF flag; honour the flag or the
            # face is lying on its side.
            upright = ImageOps.exif_transpose(opened)
            return upright if upright is not opened else opened.copy()  # outlive the `with`
    except Image.DecompressionBombError:
        raise InputError(
            f"{path} has too many pixels to open safely",
            "downscale the photo (a 1024 to 2048 px portrait is plenty)",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(
            f"Cannot read {path} as an image ({err.__class__.__name__}: {err})",
            "use a PNG, JPEG or WebP photo that opens in an image viewer",
        ) from None


def is_pil_image(obj) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return False
    return isinstance(obj, Image.Image)


def is_torch_tensor(obj) -> bool:
    # Checked by module name so that torch is never imported just to reject a list.
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def _torch_to_array(tensor) -> np.ndarray:
    if tensor.dim() == 4 and tensor.shape[0] == 1:  # a ComfyUI IMAGE batch of one
        tensor = tensor[0]
    if tensor.dim() == 3 and tensor.shape[0] in (1, 3, 4) and tensor.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"Image tensor has shape {tuple(tensor.shape)}, which looks like channels-first",
            "pass it as HxWxC (ComfyUI IMAGE layout), e.g. tensor.permute(1, 2, 0)",
        )
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()  # bfloat16/float16 -> something numpy can hold
    return tensor.numpy()


def _pil_to_array(img) -> np.ndarray:
    """PIL image -> numpy array whose dtype tells its value range (see _to_uint8)."""
    mode = img.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return np.asarray(img)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("P", "PA"):
        # A palette may carry transparency; expand to RGBA so it gets composited like any alpha.
        has_alpha = mode == "PA" or "transparency" in img.info
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)  # 16-bit greyscale, any byte order
    if mode == "I":
        return np.asarray(img, dtype=np.int64)  # 32-bit ints; range decided from the values
    if mode == "F":
        # Pillow keeps 0..255 values when it makes float images (L -> F), so scale to [0, 1].
        return np.asarray(img, dtype=np.float32) / 255.0
    if mode in ("RGBa", "La"):
        return np.asarray(img.convert("RGBA" if mode == "RGBa" else "LA"))
    # CMYK, YCbCr, LAB, HSV: Pillow converts these to RGB correctly.
    try:
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as err:
        raise InputError(
            f"Cannot convert a PIL image in mode {mode!r} to RGB ({err})",
            "save the image as an RGB PNG or JPEG",
        ) from None


def _as_hwc(array: np.ndarray) -> np.ndarray:
    """Shape checks; returns HxWxC."""
    if array.ndim == 4 and array.shape[0] == 1:  # a batch of one
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InputError(
            f"Image array has shape {array.shape}; expected HxW or HxWxC",
            "pass one image as an HxWx3 (RGB) or HxWx4 (RGBA) array",
        )
    if array.shape[2] not in (1, 2, 3, 4):
        hint = (
            "it looks channels-first; transpose it to HxWxC (np.transpose(a, (1, 2, 0)))"
            if array.shape[0] in (1, 3, 4)
            else "pass an HxWx3 (RGB) or HxWx4 (RGBA) array"
        )
        raise InputError(
            f"Image array has shape {array.shape} with {array.shape[2]} channels", hint
        )
    return array


def _check_size(array: np.ndarray) -> None:
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise InputError(f"Image is empty (shape {array.shape})", "pass a photo with pixels in it")
    if min(height, width) < MIN_IMAGE_SIDE:
        raise InputError(
            f"Image is too small ({width}x{height} px) to find a face in",
            "use a photo at least 256 px on each side",
        )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any supported dtype to uint8, keeping the channels as they are."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return _float_to_uint8(array)
    if np.issubdtype(array.dtype, np.integer):
        return _int_to_uint8(array)
    raise InputError(
        f"Image array has dtype {array.dtype}",
        "pass uint8 (0..255), uint16 or float (0..1) pixel values",
    )


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    if not np.isfinite(array).all():
        raise InputError(
            "Image contains NaN or infinite values",
            "check the step that produced the image; pixel values must be numbers in [0, 1]",
        )
    low, high = float(array.min()), float(array.max())
    tolerance = 1e-3  # resampling overshoot, not a different convention
    if low < -tolerance or high > 1.0 + tolerance:
        raise InputError(
            f"Float image values span [{low:.3g}, {high:.3g}], outside [0, 1]",
            "scale the pixels to [0, 1] (divide 8-bit values by 255) or pass a uint8 array",
        )
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _int_to_uint8(array: np.ndarray) -> np.ndarray:
    # Generic ints (PIL "I" mode, int32/int64 arrays) do not say their range: take 8-bit if the
    # values fit, else 16-bit, which is what such images almost always are.
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 65535:
        raise InputError(
            f"Integer image values span [{low}, {high}]",
            "pass 8-bit (0..255) or 16-bit (0..65535) pixel values",
        )
    if high <= 255:
        return array.astype(np.uint8)
    return _to_uint8(array.astype(np.uint16))


def _channels_to_rgb(array: np.ndarray) -> np.ndarray:
    """uint8 HxWx{1,2,3,4} -> HxWx3, alpha composited over white."""
    channels = array.shape[2]
    if channels in (2, 4):
        colour, alpha = array[:, :, :-1], array[:, :, -1:]
        array = _over_white(colour, alpha)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint16)
    blended = (colour.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return blended.astype(np.uint8)


def check_rgb_uint8(image) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.uint8):
        described = getattr(image, "shape", type(image).__name__)
        raise InputError(f"Expected an RGB uint8 HxWx3 image, got {described}",
                         "convert it with to_rgb_uint8(image) first")
