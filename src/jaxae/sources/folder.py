"""`folder:DIR`: PNG and JPEG images, one sub-folder per class (as torchvision's ImageFolder) or flat.

With sub-folders, the label of an image is the index of its folder's name among the sorted folder
names, and each class folder is searched recursively; without, there are no labels. Images are
decoded with Pillow into one uint8 array (N, H, W, C) in memory, in sorted path order. `stack_images`
is shared with the `hf:` reader.

Decoded faithfully or refused, never silently altered (Pillow's own conversions clip 16-bit gray to 255
and keep only the high byte of 16-bit colour): 1-bit, 8-bit gray, palette (through its palette), RGB,
CMYK and YCbCr images are converted by Pillow; an alpha channel (LA, RGBA, a palette's transparency) is
dropped only when every pixel is opaque; 16-bit grayscale makes the whole array float32 in [0, 1]
(value / 65535, 8-bit images / 255: the scale uint8 inputs get in training); 16-bit colour, 32-bit
integer images outside 16 bits and floating-point images are refused. An image above Pillow's limit
against decompression bombs (PIL.Image.MAX_IMAGE_PIXELS) is refused before it is decoded.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Sequence

import numpy as np

from jaxae.sources.base import DataError, Options, Split, expand

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_BANDS = {"1", "L", "I", "F", "A"}  # Pillow band names of grayscale modes (1, L, LA, I, I;16, F)
# Pillow raises OSError (UnidentifiedImageError, truncated data), ValueError, and SyntaxError for some
# broken PNG chunks.
PIL_ERRORS = (OSError, ValueError, SyntaxError)


def target_size(image_size: Sequence[int]) -> tuple[int, int] | None:
  """`data.image_size` as (height, width): () or (0,) -> None (no resize), (S,) -> (S, S), (H, W).

  Raises DataError for anything else.
  """
  size = tuple(image_size)
  if size in ((), (0,)):
    return None
  if len(size) in (1, 2) and all(isinstance(s, int) and s > 0 for s in size):
    return (size[0], size[-1])
  raise DataError(f"data.image_size={size!r} must be () (no resize), S or (height, width) in pixels")


SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's modes of 16-bit grayscale (PNG)


def _bomb_errors():
  from PIL import Image

  return (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _opened(open_image, i: int, name: str, where: str):
  """open_image(i), with Pillow's decompression-bomb warning raised as an error; DataError naming `name`."""
  from PIL import Image

  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      return open_image(i)
  except DataError:
    raise
  except _bomb_errors() as e:
    raise DataError(f"{where}: image {name} is too large to decode safely ({str(e).split(',')[0]}; Pillow's "
                    f"limit against decompression bombs, PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS})") from None
  except PIL_ERRORS as e:
    raise DataError(f"{where}: cannot read image {name}: {e}") from None


def _kind(im, name: str, where: str) -> str:
  """'16' for 16-bit grayscale, '8' for what Pillow converts to 8 bits exactly; DataError for the rest."""
  if im.mode in SIXTEEN_BIT_GRAY or im.mode == "I":
    return "16"
  if im.mode == "F":
    raise DataError(f"{where}: image {name} holds floating-point pixels (Pillow mode F), which have no fixed "
                    f"range: save the images as 8- or 16-bit PNGs, or the array as .npy")
  if any(";16" in str(getattr(t, "args", t[3] if len(t) > 3 else "")) for t in (im.tile or [])):
    raise DataError(f"{where}: image {name} has 16-bit colour channels (mode {im.mode}), which Pillow reads as "
                    f"8 bits: save it with 8-bit channels, as 16-bit grayscale, or the array as .npy")
  return "8"


def _pixels(im, kind: str, gray: bool, channels: int, size: tuple[int, int], name: str, where: str) -> np.ndarray:
  """One image as (H, W, channels): uint8 (kind '8'), or float32 in [0, 1] (kind '16', value / 65535)."""
  from PIL import Image

  width, height = size
  if kind == "16":
    values = np.asarray(im, np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise DataError(f"{where}: image {name} holds 32-bit integers from {values.min()} to {values.max()} (Pillow "
                      f"mode I), beyond 16 bits: save the array as .npy")
    f = Image.fromarray(values.astype(np.float32), "F")
    if f.size != (width, height):
      f = f.resize((width, height), Image.Resampling.BILINEAR)
    out = (np.asarray(f, np.float32) / 65535.0)[..., None]
    return np.repeat(out, channels, axis=-1)
  transparent = "A" in im.getbands() or "a" in im.getbands() or (im.mode == "P" and "transparency" in im.info)
  if transparent:
    alpha = np.asarray(im.convert("LA" if gray else "RGBA"))[..., -1]
    if (alpha < 255).any():
      raise DataError(f"{where}: image {name} has transparent pixels (mode {im.mode}): jaxae does not guess the "
                      f"background; flatten the images onto one first")
  im = im.convert("L" if channels == 1 else "RGB")
  if im.size != (width, height):
    im = im.resize((width, height), Image.Resampling.BILINEAR)
  return np.asarray(im, np.uint8).reshape(height, width, channels)


def stack_images(open_image: Callable[[int], PIL.Image.Image], names: Sequence[str], channels: int,
                 image_size: Sequence[int], where: str) -> np.ndarray:
  """Images 0..len(names)-1 (`open_image(i)` opens one lazily) as one (N, H, W, C) array: uint8, or float32
  in [0, 1] when any image is 16-bit grayscale (see the module docstring for every mode).

  channels: 1 (Pillow mode L) or 3 (RGB); 0 = 1 if every image is grayscale, else 3. image_size: see
  `target_size`; without it all images must share one size. Headers are read first, so a ragged
  folder, an image of a mode jaxae cannot decode faithfully or a decompression bomb fails before any
  image is decoded. Raises DataError naming the file at fault.
  """
  if channels not in (0, 1, 3):
    raise DataError(f"data.channels={channels!r} must be 1 (grayscale), 3 (RGB) or 0 (as stored)")
  size = target_size(image_size)
  sizes, kinds, gray = [], [], True
  for i, name in enumerate(names):
    with _opened(open_image, i, name, where) as im:
      sizes.append(im.size)
      kinds.append(_kind(im, name, where))
      gray = gray and set(im.getbands()) <= GRAY_BANDS
    if size is None and sizes[i] != sizes[0]:
      (w0, h0), (w, h) = sizes[0], sizes[i]
      raise DataError(f"{where}: images differ in size: {names[0]} is {h0}x{w0}, {name} is {h}x{w} "
                      f"(height x width); set data.image_size=(height, width) to resize them")
  height, width = size or (sizes[0][1], sizes[0][0])
  channels = channels or (1 if gray else 3)
  sixteen = "16" in kinds
  out = np.empty((len(names), height, width, channels), np.float32 if sixteen else np.uint8)
  for i, name in enumerate(names):
    try:
      with _opened(open_image, i, name, where) as im:
        pixels = _pixels(im, kinds[i], gray, channels, (width, height), name, where)
    except DataError:
      raise
    except _bomb_errors() as e:  # raised while decoding (a header that understated the size)
      raise DataError(f"{where}: image {name} is too large to decode safely ({str(e).split(',')[0]})") from None
    except PIL_ERRORS as e:
      raise DataError(f"{where}: cannot read image {name}: {e}") from None
    out[i] = pixels / np.float32(255) if sixteen and pixels.dtype == np.uint8 else pixels
  return out


def _visible(directory: str) -> list[str]:
  return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def _is_image(path: str) -> bool:
  return path.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(path)


def _images_under(directory: str) -> list[str]:
  found = []
  for parent, dirs, files in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found += [p for p in (os.path.join(parent, f) for f in sorted(files) if not f.startswith(".")) if _is_image(p)]
  return found


def read(argument: str, options: Options) -> Split:
  """The images in DIR, (N, H, W, C) uint8 (float32 in [0, 1] with 16-bit grayscale); labels from class
  sub-folders, or None when flat.

  Raises DataError when DIR is missing, holds no images, mixes images with sub-folders, has an
  empty class folder, or holds an unreadable image or (without data.image_size) images of different sizes.
  """
  from PIL import Image

  root, where = expand(argument), f"folder:{argument}"
  if not os.path.isdir(root):
    raise DataError(f"{where}: no such directory")
  entries = [os.path.join(root, e) for e in _visible(root)]
  classes = [e for e in entries if os.path.isdir(e)]
  paths = [e for e in entries if _is_image(e)]
  labels = None
  if classes and paths:
    raise DataError(f"{where} holds both images ({os.path.basename(paths[0])}) and sub-folders "
                    f"({os.path.basename(classes[0])}): put every image in a class sub-folder, or none")
  if classes:
    per_class = [_images_under(c) for c in classes]
    for c, found in zip(classes, per_class):
      if not found:
        raise DataError(f"{where}: class folder {os.path.basename(c)!r} has no PNG or JPEG images")
    paths = [p for found in per_class for p in found]
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), [len(found) for found in per_class])
  if not paths:
    raise DataError(f"{where} has no PNG or JPEG images")
  names = [os.path.relpath(p, root) for p in paths]
  x = stack_images(lambda i: Image.open(paths[i]), names, options.channels, options.image_size, where)
  return Split(x, labels, where)
