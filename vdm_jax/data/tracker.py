"""Analytic tracker for Moving Shapes videos, and caption-adherence scoring.

Reads the color, shape and direction of motion of each object straight from the
pixels, so generated videos can be checked against their captions with no learned
classifier. Built to tolerate the imperfect colors, blurry edges and specks of a
generative model's output:

* segmentation: each pixel brighter than `min_brightness` goes to the nearest pure
  color (corners of the RGB cube) of its brightness-normalised color, only when it
  lies within `max_color_distance` of it;
* per color and frame only the largest 4-connected component counts, and only when
  it has at least `min_area` pixels (specks are ignored);
* a color is an object when it is found in at least `min_frames_fraction` of frames.
"""

import itertools
import re
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from vdm_jax.data.moving_shapes import COLORS, DIRECTIONS, SHAPES

_COLOR_NAMES = tuple(COLORS)
_COLOR_TABLE = np.array([COLORS[c] for c in _COLOR_NAMES], np.float32) / 255  # [K, 3]
# Within-frame connectivity only: components never join across time.
_FRAME_STRUCTURE = np.zeros((3, 3, 3), bool)
_FRAME_STRUCTURE[1] = ndimage.generate_binary_structure(2, 1)
_DIRECTION_NAMES = tuple(DIRECTIONS)
_DIRECTION_ANGLES = np.array([np.arctan2(dy, dx) for dx, dy in DIRECTIONS.values()])

_PHRASE = re.compile(
    r'^a (?P<color>{}) (?P<shape>{}) moving (?P<direction>{})$'.format(
        '|'.join(_COLOR_NAMES), '|'.join(SHAPES),
        '|'.join(sorted(_DIRECTION_NAMES, key=len, reverse=True))))


def parse_caption(caption: str | bytes) -> list[tuple[str, str, str]]:
  """'a red circle moving left and a blue square moving up' -> [(color, shape, dir)].

  Inverse of the renderer's captions; raises ValueError on anything else.
  """
  if isinstance(caption, bytes):
    caption = caption.decode('utf-8')
  objects = []
  for phrase in caption.strip().split(' and '):
    match = _PHRASE.match(phrase)
    if match is None:
      raise ValueError(f'Not a Moving Shapes caption: {caption!r}')
    objects.append((match['color'], match['shape'], match['direction']))
  return objects


def segment_colors(video: np.ndarray, *, min_brightness: float = 0.35,
                   max_color_distance: float = 0.5) -> np.ndarray:
  """Per-pixel color label: int [T, H, W], index into COLORS or -1 for none.

  A pixel is divided by its brightness (largest channel), so a dim or shaded red is
  still red, and goes to the nearest corner of the RGB cube (per-channel rounding).
  Pixels darker than `min_brightness` (fraction of 255) are background; pixels
  farther than `max_color_distance` (L2, brightness-normalised) from the corner are
  ambiguous mixtures and dropped.

  Args:
    video: uint8 [T, H, W, 3] (float in [0, 255] also accepted).
  """
  x = np.asarray(video, np.float32)
  channels = [x[..., i] for i in range(3)]  # Channel-wise ops beat reducing axis 3.
  brightness = np.maximum(np.maximum(channels[0], channels[1]), channels[2])
  inv = 1 / np.maximum(brightness, 1e-3)
  code = np.zeros(brightness.shape, np.int64)
  dist2 = np.zeros(brightness.shape, np.float32)
  for i, c in enumerate(channels):
    chroma = c * inv  # [T, H, W] in [0, 1]
    corner = chroma >= 0.5
    dist2 += (chroma - corner) ** 2
    code += corner.astype(np.int64) << (2 - i)
  code_to_label = np.full(8, -1, np.int64)
  for label, rgb in enumerate(_COLOR_TABLE):
    r, g, b = (rgb >= 0.5).astype(int)
    code_to_label[r * 4 + g * 2 + b] = label
  labels = code_to_label[code]
  labels[(brightness < min_brightness * 255) | (dist2 > max_color_distance ** 2)] = -1
  return labels


def _classify_shape(fill: float, asymmetry: float) -> str:
  """Shape from the silhouette's bounding-box fill ratio and vertical asymmetry.

  Triangles (apex up) have their mass low in the box (centroid ~1/6 of the height
  below the box center) and fill ~0.5; circles fill ~pi/4 and squares ~1, both
  symmetric. Thresholds sit between the ranges measured on rendered videos (medians
  over frames at 32x32: circle fill 0.61-0.94, square 1.0, triangle asymmetry >=
  0.11, circle |asymmetry| <= 0.05).
  """
  if asymmetry > 0.08:
    return 'triangle'
  if fill > 0.95:
    return 'square'
  return 'circle'


def _direction(velocity: np.ndarray, *, min_speed: float) -> str | None:
  """Nearest of the 8 directions to (vx, vy), or None when barely moving."""
  vx, vy = velocity
  if np.hypot(vx, vy) < min_speed:
    return None
  angle = np.arctan2(vy, vx)
  diff = np.angle(np.exp(1j * (_DIRECTION_ANGLES - angle)))  # Wrapped to [-pi, pi].
  return _DIRECTION_NAMES[int(np.argmin(np.abs(diff)))]


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Shifts a 2-D mask by integer pixels, filling with False."""
  out = np.zeros_like(mask)
  H, W = mask.shape
  ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
  xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
  out[yd, xd] = mask[ys, xs]
  return out


def track_video(
    video: np.ndarray,
    *,
    min_brightness: float = 0.35,
    max_color_distance: float = 0.5,
    min_area: int | None = None,
    min_frames_fraction: float = 0.5,
    min_speed: float | None = None,
) -> list[dict[str, Any]]:
  """Finds the objects in a video and reads their attributes.

  Args:
    video: uint8 [T, H, W, 3].
    min_brightness, max_color_distance: see `segment_colors`.
    min_area: smallest component (pixels) that counts as an object in a frame;
      default 1% of the frame (~10 px at 32x32, a rendered object has >= 21).
    min_frames_fraction: fraction of frames in which a color must be found.
    min_speed: below this (px/frame, fitted) the object is static: direction None.
      Default 0.3 px/frame at 32x32, scaled with resolution (renders move >= 1).

  Returns:
    One dict per object found (at most one per color), sorted by area:
    'color', 'shape' (one of SHAPES), 'direction' (one of DIRECTIONS or None),
    'centroids' float [T, 2] (x, y; NaN where not found), 'velocity' (vx, vy) in
    px/frame, 'area' (median px), 'consistency' in [0, 1]: mean IoU of consecutive
    masks after aligning their centroids (missing frames count 0) -- 1 for a rigid
    object, low for one that flickers, morphs or vanishes.
  """
  video = np.asarray(video)
  if video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f'video must be [T, H, W, 3], got shape {video.shape}.')
  if video.dtype != np.uint8 and video.size and video.min() < 0:
    raise ValueError('video must be uint8 in [0, 255] (model outputs in [-1, 1]: '
                     'np.round((x + 1) * 127.5).clip(0, 255).astype(np.uint8)).')
  T, H, W, _ = video.shape
  if min_area is None:
    min_area = max(3, int(round(0.01 * H * W)))
  if min_speed is None:
    min_speed = 0.3 * W / 32
  labels = segment_colors(video, min_brightness=min_brightness,
                          max_color_distance=max_color_distance)
  frame_ids = np.arange(T, dtype=np.float64)
  color_counts = np.bincount(labels.ravel() + 1, minlength=len(_COLOR_NAMES) + 1)[1:]
  objects = []
  for color_id, color in enumerate(_COLOR_NAMES):
    if color_counts[color_id] < min_area * max(1, min_frames_fraction * T):
      continue  # Too few pixels of this color anywhere: skip the labelling.
    present = labels == color_id
    # Components never span frames, so each id belongs to one frame.
    components, num = ndimage.label(present, structure=_FRAME_STRUCTURE)
    counts = np.bincount(components.ravel(), minlength=num + 1)
    counts[0] = 0
    comp_frame = np.zeros(num + 1, np.int64)
    comp_frame[components.ravel()] = np.repeat(np.arange(T), H * W)
    # Largest component of each frame (ids sorted by frame, then by size).
    order = np.lexsort((counts, comp_frame))
    last_of_frame = np.r_[comp_frame[order][1:] != comp_frame[order][:-1], True]
    keep = np.zeros(num + 1, bool)
    best = order[last_of_frame]
    keep[best[counts[best] >= min_area]] = True
    masks = keep[components]  # [T, H, W]
    # Fill each row between its leftmost and rightmost pixel: exact for the convex
    # shapes rendered, and it closes holes that noise punches into a silhouette.
    rows = masks.any(axis=2)  # [T, H]
    first = masks.argmax(axis=2)
    last = W - 1 - masks[:, :, ::-1].argmax(axis=2)
    span = np.where(rows, last - first + 1, 0)  # [T, H]
    xs = np.arange(W)
    masks = rows[..., None] & (xs >= first[..., None]) & (xs <= last[..., None])
    area = span.sum(axis=1)  # [T]
    found = area > 0
    if found.sum() < max(2, min_frames_fraction * T):
      continue

    # Silhouette features per frame (vectorised over frames).
    safe_area = np.maximum(area, 1)
    cy = (span @ np.arange(H, dtype=np.float64)) / safe_area
    cx = np.sum(span * (first + last) / 2, axis=1) / safe_area
    cols = masks.any(axis=1)  # [T, W]
    y0, y1 = rows.argmax(axis=1), H - 1 - rows[:, ::-1].argmax(axis=1)
    x0, x1 = cols.argmax(axis=1), W - 1 - cols[:, ::-1].argmax(axis=1)
    h, w = y1 - y0 + 1, x1 - x0 + 1
    fills = (area / (h * w))[found]
    asymmetries = ((cy - (y0 + y1) / 2) / h)[found]
    centroids = np.where(found[:, None], np.stack([cx, cy], axis=1) + 0.5, np.nan)
    areas = area[found]
    shape = _classify_shape(float(np.median(fills)), float(np.median(asymmetries)))

    # Least-squares constant velocity through the found centroids.
    tf = frame_ids[found]
    A = np.stack([tf, np.ones_like(tf)], axis=1)
    (vx, _), *_ = np.linalg.lstsq(A, centroids[found, 0], rcond=None)
    (vy, _), *_ = np.linalg.lstsq(A, centroids[found, 1], rcond=None)
    velocity = np.array([vx, vy])

    ious = []
    for t in range(T - 1):
      if not (found[t] and found[t + 1]):
        ious.append(0.0)
        continue
      dx, dy = np.round(centroids[t + 1] - centroids[t]).astype(int)
      moved = _shift(masks[t], int(dy), int(dx))
      union = np.logical_or(moved, masks[t + 1]).sum()
      ious.append(np.logical_and(moved, masks[t + 1]).sum() / union)
    objects.append(dict(
        color=color, shape=shape,
        direction=_direction(velocity, min_speed=min_speed),
        centroids=centroids, velocity=velocity, area=float(np.median(areas)),
        consistency=float(np.mean(ious)) if ious else 0.0))
  objects.sort(key=lambda o: -o['area'])
  return objects


def _match(wanted: Sequence[tuple[str, str, str]],
           tracked: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
  """Assigns distinct tracked objects to captioned ones, maximising agreement.

  Color agreement breaks ties first (it identifies the object best). Captions have
  1-2 objects and videos at most 7, so brute force is cheap.
  """
  def agreement(w, o):
    color, shape, direction = w
    return (3 * (o['color'] == color) + (o['shape'] == shape)
            + (o['direction'] == direction))

  k = len(wanted)
  padded = list(tracked) + [None] * k  # None = "not found".
  best, best_score = [None] * k, -1
  for perm in itertools.permutations(range(len(padded)), k):
    chosen = [padded[i] for i in perm]
    score = sum(agreement(w, o) for w, o in zip(wanted, chosen) if o is not None)
    if score > best_score:
      best, best_score = chosen, score
  return best


def score_caption_adherence(videos: np.ndarray, captions: Sequence[str | bytes],
                            **track_kwargs) -> dict[str, float]:
  """Fraction of videos whose captioned attributes the tracker finds.

  Args:
    videos: uint8 [N, T, H, W, 3].
    captions: N captions in the renderer's grammar.
    **track_kwargs: passed to `track_video`.

  Returns:
    {'color', 'shape', 'direction': fraction of videos where that attribute is right
    for every captioned object; 'all': fraction where every captioned object is
    found with all three right (each matched to a distinct tracked object);
    'count': fraction with exactly as many objects as captioned (not part of 'all');
    'consistency': mean over videos of the matched objects' consistency (0 when not
    found)}. An empty or black video has no objects: all wrong.
  """
  if len(videos) != len(captions):
    raise ValueError(f'{len(videos)} videos but {len(captions)} captions.')
  keys = ('color', 'shape', 'direction', 'all', 'count', 'consistency')
  totals = dict.fromkeys(keys, 0.0)
  for video, caption in zip(videos, captions):
    wanted = parse_caption(caption)
    tracked = track_video(video, **track_kwargs)
    matched = _match(wanted, tracked)
    hits = {a: [o is not None and o[a] == w[i] for w, o in zip(wanted, matched)]
            for i, a in enumerate(('color', 'shape', 'direction'))}
    for a, h in hits.items():
      totals[a] += all(h)
    totals['all'] += all(all(h) for h in zip(*hits.values()))
    totals['count'] += len(tracked) == len(wanted)
    totals['consistency'] += np.mean(
        [o['consistency'] if o is not None else 0.0 for o in matched])
  n = max(len(captions), 1)
  return {k: float(v / n) for k, v in totals.items()}
