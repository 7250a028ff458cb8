"""Reading and writing images, in one place, with one set of conversion rules.

Every image dp2o reads becomes 8-bit RGB (an H×W×3 ``uint8`` array) by these rules:

* EXIF orientation is applied first, so the pixels are upright as a viewer shows them.
* Greyscale (``L``, ``1``) is copied to the three channels.
* 16- and 32-bit integer greyscale (``I;16``, ``I``) is scaled linearly from its type's
  full range (0–65535) to 0–255 and rounded; 16-bit RGB PNGs are reduced to 8 bits by
  Pillow on load.
* Floating-point greyscale (``F``) is read as 0–1 when its maximum is at most 1, else as
  0–255, then clipped and rounded.
* Alpha (``RGBA``, ``LA``, palette images with transparency) is composited onto white:
  transparent pixels must not leak their hidden colour into an SR target.
* Palette (``P``), ``CMYK``, ``YCbCr`` and other modes are converted by Pillow.

A file that cannot become such an array raises :class:`BadImageError`, which names the
file and the reason (missing, empty, not an image, truncated, too small, unreadable).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from dp2o_core.atomic import atomic_path
from dp2o_core.errors import Dp2oError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch

#: File suffixes dp2o reads as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


class BadImageError(Dp2oError):
    """An input image that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path | str, reason: str, *, skippable: bool = True) -> None:
        self.path = Path(path)
        self.reason = reason
        self.skippable = skippable
        hint = (
            ", or pass --on-bad-image skip to skip such files and list them at the end." if skippable else "."
        )
        super().__init__(f"bad image {self.path}: {reason}. Fix or remove the file{hint}")

    def unskippable(self) -> BadImageError:
        """The same error for a command where skipping cannot help (one input, or no
        ``--on-bad-image`` option): its message offers no skip."""
        return BadImageError(self.path, self.reason, skippable=False)


def read_image(path: Path | str, min_size: int = 1) -> np.ndarray:
    """The image at ``path`` as an H×W×3 ``uint8`` RGB array (rules in the module docstring).

    ``min_size`` is the smallest allowed height and width in pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except OSError as error:
        raise BadImageError(path, f"cannot access the file ({error.strerror})") from None
    if size == 0:
        raise BadImageError(path, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                array = _to_rgb8(image)
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageError(path, f"too many pixels ({error})") from None
    except PermissionError:
        raise BadImageError(path, "permission denied") from None
    except (OSError, SyntaxError, ValueError) as error:
        message = str(error)
        if "truncated" in message or "broken data stream" in message or "EOF" in message:
            raise BadImageError(path, f"the file is truncated ({message})") from None
        raise BadImageError(path, f"cannot decode the image ({message})") from None
    height, width = array.shape[:2]
    if height < min_size or width < min_size:
        raise BadImageError(
            path, f"too small: {width}×{height} pixels, at least {min_size}×{min_size} needed"
        )
    return array


def image_size(path: Path | str) -> tuple[int, int]:
    """(width, height) of the image at ``path`` from its header, without decoding its pixels
    (a file that declares billions of pixels costs nothing here). EXIF rotation by a quarter
    turn swaps the two, as :func:`read_image` does."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise BadImageError(path, f"too many pixels ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, f"cannot read the image's header ({error})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_rgb8(image) -> np.ndarray:
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        data = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or data.max(initial=0) <= 65535 else 2**32 - 1
        grey = np.clip(np.rint(data / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        data = np.asarray(image, dtype=np.float64)
        scale = 255.0 if np.nanmax(data, initial=0) <= 1.0 else 1.0
        grey = np.clip(np.rint(np.nan_to_num(data) * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA") or (mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_image_tensor(path: Path | str) -> torch.Tensor:
    """The image at ``path`` as a 1×3×H×W float tensor in [0, 1] (what backbones and rewards take)."""
    return array_to_tensor(read_image(path))


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """An H×W×3 ``uint8`` array as a 1×3×H×W float tensor in [0, 1]."""
    import torch

    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


def tensor_to_array(image: torch.Tensor) -> np.ndarray:
    """A 3×H×W image in [0, 1] as an H×W×3 ``uint8`` array (clamped, rounded), ready for PNG."""
    import torch

    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """``images`` (…×H×W) padded at the bottom and right, by repeating the edge pixels, to sides
    that are multiples of ``multiple`` (the same tensor when they already are): what a network
    whose input must fit its downsampling grid gets, its output cropped back afterwards."""
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    bottom, right = -height % multiple, -width % multiple
    if not (bottom or right):
        return images
    return F.pad(images, (0, right, 0, bottom), mode="replicate")


def upsample_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR images (N×3×h×w in [0, 1]) bicubic-upsampled ×scale by torch and clamped to [0, 1]:
    tiny-sr's conditioning and the plain-upsampling baseline (the ControlNet backbones use
    :func:`upsample_pillow`, as the DP²O-SR authors' scripts do)."""
    import torch.nn.functional as F

    size = (lr.shape[-2] * scale, lr.shape[-1] * scale)
    return F.interpolate(lr.float(), size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def upsample_pillow(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR images (N×3×h×w in [0, 1]) as 8-bit RGB enlarged ×scale by Pillow's bicubic filter,
    back in [0, 1]: the control image the DP²O-SR authors' scripts make (``Image.resize``).
    Pillow's cubic kernel (a = −0.5) differs from torch's (a = −0.75) by a few grey levels at
    edges, which a released ControlNet would see."""
    return resize_pillow(lr, lr.shape[-2] * scale, lr.shape[-1] * scale)


def resize_pillow(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Images (N×3×H×W in [0, 1]) as 8-bit RGB resized to ``height`` × ``width`` by Pillow's
    bicubic filter, back in [0, 1]; the same tensor when they have that size already (Pillow
    would return a copy)."""
    import numpy as np
    import torch
    from PIL import Image

    if tuple(images.shape[-2:]) == (height, width):
        return images
    made = []
    for image in images:
        picture = Image.fromarray(tensor_to_array(image)).resize((width, height), Image.Resampling.BICUBIC)
        made.append(array_to_tensor(np.array(picture)))  # a writable copy for torch
    return torch.cat(made).to(images.device)


def write_png(path: Path | str, array: np.ndarray) -> None:
    """Write an H×W×3 ``uint8`` array as PNG atomically (temporary file, then rename)."""
    import numpy as np
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG", compress_level=1)


def list_images(root: Path, patterns: tuple[str, ...] = ("*",)) -> list[Path]:
    """Image files under ``root`` (recursively) matching any glob pattern, sorted by path.

    Hidden files and folders (name starting with '.') are left out. Names that are not
    valid UTF-8 (they cannot become item ids or table entries) are refused, all at once.
    """
    found: set[Path] = set()
    for pattern in patterns:
        for path in root.rglob(pattern):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                found.add(path)
    undecodable = [p for p in found if not _is_utf8(str(p))]
    if undecodable:
        shown = ", ".join(sorted(_printable(str(p)) for p in undecodable)[:5])
        raise UsageError(
            f"{len(undecodable)} image file name(s) under {root} are not valid UTF-8: {shown}"
            f"{' …' if len(undecodable) > 5 else ''}. Rename them to UTF-8 names "
            "(for example with convmv -f latin1 -t utf8 --notest -r FOLDER)."
        )
    return sorted(found)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """A file name as bytes escaped where they are not UTF-8 (``bad\\xff.png``)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
