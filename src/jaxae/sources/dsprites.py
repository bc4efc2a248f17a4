"""`dsprites`: a procedurally generated dSprites-like dataset, drawn in NumPy on demand (no download).

dSprites (Matthey, Higgins, Hassabis & Lerchner 2017, github.com/deepmind/dsprites-dataset) is every
combination of five factors of variation of one white sprite on a black 64x64 image:

    factor        values   (index k has value)
    shape         3        square, ellipse, heart (DeepMind's file stores 1, 2, 3)
    scale         6        linspace(0.5, 1, 6)
    orientation   40       linspace(0, 2 pi, 40), radians: DeepMind's values, 2 pi included, so index
                           0 and 39 are the same angle (as in their file: 0.1611 = 2 pi / 39 apart)
    posX, posY    32 each  linspace(0, 1, 32)

737,280 images, ordered as DeepMind's file: row-major over (shape, scale, orientation, posX, posY),
posY fastest, so row i has factor indices `np.unravel_index(i, FACTOR_SIZES)` (`factors_of`). The
Split carries them as `factors` (N, 5) int32 (`factor_names` = FACTOR_NAMES) for the disentanglement
metrics of `jaxae.evaluate`, and the shape as labels (y).

Memory. All images take 737,280 x 4,096 bytes = 3 GB, so none are stored: `x` is a `LazyArray` over
a renderer that draws the rows asked for when they are indexed (a batch, a `data.max_train` subset,
the held-out part). Drawing is vectorized NumPy over chunks of images, 20-25 us of CPU time per image
(10,000 random rows: 0.18 s of CPU, 0.7 s of wall time on a busy 2-core VM; all 737,280 about 20 s of
CPU). An in-memory run (`data.stream='false'`, or 'auto' when the data take under a quarter of the
memory, as the whole set does on a 24 GiB machine) draws its training split once at the start: with
`data.max_train` only those rows; all 663,552 training images (after the default 10% hold-out) take
2.7 GB of host memory and again as device buffers. `data.stream=true` draws every batch when it is
needed instead: a draw of the training set per epoch, no memory.

Geometry (ours; DeepMind published the factor values but not the heart's outline, the sprite sizes or
the mapping of positions to pixels, so images differ from their file in these details):
  * Pixel (row r, column c) covers [c, c+1) x [r, r+1) in pixel units and is on (255; uint8, so
    `to_float` gives {0, 1}: binary images) when its centre (c + 1/2, r + 1/2) lies inside the shape:
    point sampling, no anti-aliasing; off pixels are 0.
  * The sprite's centre is (12 + 40 posX, 12 + 40 posY) pixels: posX moves right, posY moves down (row
    index), 40/31 = 1.29 pixels per step. The margin of 12 keeps the largest rotated sprite (radius
    8 sqrt 2 = 11.3 pixels) inside the image: no sprite is ever cut by the border.
  * A shape is drawn in its own frame (u, v) in units of its half-size `HALF_SIZE` x scale (8 pixels at
    scale 1, 4 at scale 0.5), v pointing up, rotated counter-clockwise (as displayed) by the orientation:
    square max(|u|, |v|) <= 1 (side 16 pixels at scale 1); ellipse u^2 + (v / 0.5)^2 <= 1 (axes 16 x 8
    pixels at scale 1, the long axis horizontal at orientation 0); heart the classical implicit curve
    (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with x = 1.139 u, y = 1.139 v + 0.118, which fits it in the unit
    box [-1, 1]^2 (it spans x in [-1.139, 1.139], y in [-1, 1.2365]), lobes up and point down at
    orientation 0.
  * The square repeats itself every quarter turn and the ellipse every half turn (orientation is only
    identifiable modulo pi/2 and pi for them), as in DeepMind's file; the heart has no symmetry.
"""

from __future__ import annotations

import math

import numpy as np

from jaxae.sources.base import DataError, Options, Split
from jaxae.sources.lazy import LazyArray

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
IMAGE_SIZE = 64
HALF_SIZE = 8.0  # pixels: the half-size of a sprite at scale 1 (the square's half side)
MARGIN, SPAN = 12.0, 40.0  # pixels: a sprite's centre is MARGIN + SPAN * pos along each axis
ELLIPSE_MINOR = 0.5  # the ellipse's semi-minor axis, in half-sizes
HEART_SCALE, HEART_SHIFT = 1.139, 0.118  # the implicit heart's frame from the unit box (module docstring)
WINDOW = 24  # pixels: the square window around the centre that holds every sprite (radius <= 11.32)
CHUNK = 2048  # images drawn at once: bounds the temporaries to ~10 MB each


def factor_values() -> dict[str, np.ndarray]:
  """{factor name: float64 values by index}: DeepMind's latents values (shape as 1, 2, 3)."""
  return {"shape": np.arange(1.0, 4.0), "scale": np.linspace(0.5, 1.0, 6),
          "orientation": np.linspace(0.0, 2 * np.pi, 40), "posX": np.linspace(0.0, 1.0, 32),
          "posY": np.linspace(0.0, 1.0, 32)}


_VALUES = factor_values()
# cos/sin of the 40 angles from the standard library once, so a drawing does not depend on NumPy's SIMD path.
_COS = np.asarray([math.cos(t) for t in _VALUES["orientation"]])
_SIN = np.asarray([math.sin(t) for t in _VALUES["orientation"]])


def factors_of(index) -> np.ndarray:
  """Factor indices (N, 5) int32 of rows `index` (N,) of the dataset (DeepMind's order; posY fastest)."""
  return np.stack(np.unravel_index(np.asarray(index, np.int64), FACTOR_SIZES), axis=-1).astype(np.int32)


def index_of(factors) -> np.ndarray:
  """Rows (N,) int64 of factor indices (N, 5): the inverse of `factors_of`."""
  return np.ravel_multi_index(tuple(np.asarray(factors).T), FACTOR_SIZES).astype(np.int64)


def render(factors) -> np.ndarray:
  """Images (N, 64, 64, 1) uint8 in {0, 255} of factor indices (N, 5) (geometry: module docstring).

  Vectorized over chunks of CHUNK images; each shape is evaluated on the WINDOW x WINDOW pixels around
  its centre only. Raises ValueError for indices out of range.
  """
  factors = np.asarray(factors, np.int64).reshape(-1, len(FACTOR_SIZES))
  if factors.size and (factors.min() < 0 or np.any(factors.max(axis=0) >= FACTOR_SIZES)):
    raise ValueError(f"dsprites factor indices must lie in [0, {FACTOR_SIZES}), got {factors.min(axis=0)} to "
                     f"{factors.max(axis=0)}")
  out = np.zeros((len(factors), IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
  for start in range(0, len(factors), CHUNK):
    _render_chunk(factors[start:start + CHUNK], out[start:start + CHUNK, :, :, 0])
  return out


def _render_chunk(f: np.ndarray, out: np.ndarray) -> None:
  for s, inside in enumerate((_in_square, _in_ellipse, _in_heart)):
    rows = np.flatnonzero(f[:, 0] == s)
    if len(rows):
      _draw(f[rows], inside, rows, out)


def _draw(f: np.ndarray, inside, rows: np.ndarray, out: np.ndarray) -> None:
  """Draws sprites of one shape (factors f (n, 5)) into out[rows] (n, 64, 64); `inside(u, v)` tests the shape."""
  _, scale, turn, px, py = f.T
  half = HALF_SIZE * _VALUES["scale"][scale]
  cx, cy = MARGIN + SPAN * _VALUES["posX"][px], MARGIN + SPAN * _VALUES["posY"][py]
  c0 = np.floor(cx).astype(np.int64) - WINDOW // 2  # the window's first column and row: in [0, 40]
  r0 = np.floor(cy).astype(np.int64) - WINDOW // 2
  offsets = np.arange(WINDOW) + 0.5
  dx = ((c0[:, None] + offsets) - cx[:, None]) / half[:, None]  # (n, W) right, in half-sizes
  dy = (cy[:, None] - (r0[:, None] + offsets)) / half[:, None]  # (n, W) up (rows grow downwards)
  cos, sin = _COS[turn][:, None, None], _SIN[turn][:, None, None]
  # The pixel in the sprite's frame: rotated back by the orientation. Axes (n, row, column).
  u = cos * dx[:, None, :] + sin * dy[:, :, None]
  v = cos * dy[:, :, None] - sin * dx[:, None, :]
  window_rows = r0[:, None, None] + np.arange(WINDOW)[None, :, None]
  window_cols = c0[:, None, None] + np.arange(WINDOW)[None, None, :]
  out[rows[:, None, None], window_rows, window_cols] = inside(u, v).view(np.uint8) * np.uint8(255)


def _in_square(u, v):
  return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _in_ellipse(u, v):
  return np.square(u) + np.square(v / ELLIPSE_MINOR) <= 1.0


def _in_heart(u, v):
  x2, y = np.square(HEART_SCALE * u), HEART_SCALE * v + HEART_SHIFT
  r = x2 + np.square(y) - 1.0
  return r * r * r <= x2 * (y * y * y)  # products, not `** 3`: a third of the time of np.power


class Renderer:
  """Images of rows of the dataset, drawn when indexed: a `LazyArray` shard of shape (737280, 64, 64, 1).

  `r[key]`: key a slice, an int or a 1-D integer array of rows (DeepMind's order) -> a new uint8 array
  (n, 64, 64, 1) (one image (64, 64, 1) for an int). Raises IndexError for rows out of range.
  """
  shape = (NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 1)
  dtype = np.dtype(np.uint8)
  ndim = 4

  def __len__(self) -> int:
    return NUM_IMAGES

  def __repr__(self) -> str:
    return "dsprites.Renderer()"

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, slice):
      return render(factors_of(np.arange(*key.indices(NUM_IMAGES))))
    rows = np.asarray(key)
    if rows.dtype.kind not in "iu" or rows.ndim > 1:
      raise TypeError(f"dsprites rows are indexed by an int, a slice or a 1-D integer array, not {key!r}")
    if rows.size and (rows.min() < -NUM_IMAGES or rows.max() >= NUM_IMAGES):
      raise IndexError(f"row index out of range for {NUM_IMAGES} dsprites images")
    images = render(factors_of(rows.reshape(-1) % NUM_IMAGES))
    return images[0] if rows.ndim == 0 else images


def dsprites() -> Split:
  """All 737,280 images (a LazyArray, drawn on indexing), labels = shape, factors (N, 5) int32."""
  factors = factors_of(np.arange(NUM_IMAGES))
  return Split(LazyArray([Renderer()]), factors[:, 0].copy(), "dsprites", factors=factors, factor_names=FACTOR_NAMES)


def read(argument: str, options: Options) -> Split:
  if options.split not in ("train", "all"):
    raise DataError(f"dsprites has only one split ('train'), not {options.split!r}: hold out a part "
                    f"(data.holdout_fraction)")
  return dsprites()
