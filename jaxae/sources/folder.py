"""`folder:DIR`: PNG and JPEG images, one sub-folder per class (as torchvision's ImageFolder) or flat.

With sub-folders, the label of an image is the index of its folder's name among the sorted folder
names, and each class folder is searched recursively; without, there are no labels. Images are
decoded with Pillow into one uint8 array (N, H, W, C) in memory, in sorted path order. `stack_images`
is shared with the `hf:` reader.
"""

from __future__ import annotations

import os
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


def stack_images(open_image: Callable[[int], PIL.Image.Image], names: Sequence[str], channels: int,
                 image_size: Sequence[int], where: str) -> np.ndarray:
  """Images 0..len(names)-1 (`open_image(i)` opens one lazily) as one (N, H, W, C) uint8 array.

  channels: 1 (Pillow mode L) or 3 (RGB); 0 = 1 if every image is grayscale, else 3. image_size: see
  `target_size`; without it all images must share one size. Headers are read first, so a ragged
  folder fails before any image is decoded. Raises DataError naming the file at fault.
  """
  from PIL import Image

  if channels not in (0, 1, 3):
    raise DataError(f"data.channels={channels!r} must be 1 (grayscale), 3 (RGB) or 0 (as stored)")
  size = target_size(image_size)
  sizes, gray = [], True
  for i, name in enumerate(names):
    try:
      with open_image(i) as im:
        sizes.append(im.size)
        gray = gray and set(im.getbands()) <= GRAY_BANDS
    except PIL_ERRORS as e:
      raise DataError(f"{where}: cannot read image {name}: {e}") from None
    if size is None and sizes[i] != sizes[0]:
      (w0, h0), (w, h) = sizes[0], sizes[i]
      raise DataError(f"{where}: images differ in size: {names[0]} is {h0}x{w0}, {name} is {h}x{w} "
                      f"(height x width); set data.image_size=(height, width) to resize them")
  height, width = size or (sizes[0][1], sizes[0][0])
  channels = channels or (1 if gray else 3)
  out = np.empty((len(names), height, width, channels), np.uint8)
  for i, name in enumerate(names):
    try:
      with open_image(i) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != (width, height):
          im = im.resize((width, height), Image.Resampling.BILINEAR)
        out[i] = np.asarray(im, np.uint8).reshape(height, width, channels)
    except PIL_ERRORS as e:
      raise DataError(f"{where}: cannot read image {name}: {e}") from None
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
  """The images in DIR, (N, H, W, C) uint8; labels from class sub-folders, or None when flat.

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
