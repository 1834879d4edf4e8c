"""The picture of an evaluation: the metric table, metric curves over training steps read from the
run's TensorBoard logs, and generated videos next to true ones, in one PNG (Pillow only); and an
HTML page with the same table and PNG plus, per caption, the videos as GIFs (what the model was
given, for conditional generation; generated; true).

TensorBoard event files are TFRecord files of `Event` protos: each record is a little-endian
uint64 length, a uint32 masked CRC of it, the bytes, and a uint32 masked CRC of them. They are read
here with tensorboardX's own protos (no TensorFlow, no tensorboard package); scalars written by
tensorboardX's `add_scalar` carry `simple_value`.
"""

import glob
import html
import os
import struct
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Curves drawn when present: (title, [(tag, label, color)]); eval/* tags are what train.py logs of
# evaluate_run's results.
CURVES = (
    ('training loss', [('train/loss', 'loss', (31, 119, 180))]),
    ('caption adherence (all three right)',
     [('eval/caption_adherence/all', 'generated', (31, 119, 180)),
      ('eval/ground_truth/all', 'ground truth', (127, 127, 127))]),
    ('bits per dimension', [('eval/bpd/total', 'test videos', (31, 119, 180))]),
    ('learned-feature FVD', [('eval/fvd_learned/generated', 'generated', (31, 119, 180)),
                             ('eval/fvd_learned/floor', 'floor', (127, 127, 127))]),
    ('FVD (I3D)', [('eval/fvd_i3d/generated', 'generated', (31, 119, 180)),
                   ('eval/fvd_i3d/floor', 'floor', (127, 127, 127))]),
    ('FID (C3D)', [('eval/fid_c3d/generated', 'generated', (31, 119, 180)),
                   ('eval/fid_c3d/floor', 'floor', (127, 127, 127))]),
    ('IS (C3D)', [('eval/is_c3d/generated', 'generated', (31, 119, 180)),
                  ('eval/is_c3d/ground_truth', 'ground truth', (127, 127, 127))]),
)

_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)


def _records(path: str):
  """The payloads of a TFRecord file; a record cut short (a writer still running) ends it."""
  with open(path, 'rb') as f:
    data = f.read()
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[offset:offset + 8])
    end = offset + 12 + length + 4
    if end > len(data):
      return
    yield data[offset + 12:offset + 12 + length]
    offset = end


def read_scalars(logdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps int [N], values float [N])} of every scalar in the event files under `logdir`,
  sorted by step; the last value written wins for a step written twice (a resumed run)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  points: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, '**', 'events.out.tfevents.*'), recursive=True)):
    for record in _records(path):
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField('simple_value'):
          points.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
  return {tag: (np.array(sorted(p)), np.array([p[s] for s in sorted(p)]))
          for tag, p in points.items()}


def _plot(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
          lines: Sequence[tuple[str, np.ndarray, np.ndarray, tuple[int, int, int]]], font) -> None:
  """One line plot in box (x0, y0, x1, y1): title, axes with min/max labels, a polyline (and dots)
  per (label, steps, values, color), and a legend."""
  x0, y0, x1, y1 = box
  draw.text((x0 + 4, y0), title, fill=_INK, font=font)
  left, top, right, bottom = x0 + 50, y0 + 18, x1 - 8, y1 - 30
  draw.rectangle((left, top, right, bottom), outline=_INK)
  steps = np.concatenate([s for _, s, _, _ in lines])
  values = np.concatenate([v for _, _, v, _ in lines])
  s_lo, s_hi = float(steps.min()), float(steps.max())
  v_lo, v_hi = float(values.min()), float(values.max())
  if s_hi == s_lo:  # one step: the points in the middle
    s_lo, s_hi = s_lo - 1, s_hi + 1
  if v_hi == v_lo:  # one value: a range around it
    pad = abs(v_lo) / 10 or 1.0
    v_lo, v_hi = v_lo - pad, v_hi + pad
  to_xy = lambda s, v: (left + (s - s_lo) / (s_hi - s_lo) * (right - left),
                        bottom - (v - v_lo) / (v_hi - v_lo) * (bottom - top))
  draw.text((x0 + 2, top), f'{v_hi:.3g}', fill=_INK, font=font)
  draw.text((x0 + 2, bottom - 10), f'{v_lo:.3g}', fill=_INK, font=font)
  draw.text((left, bottom + 2), f'{s_lo:.0f}', fill=_INK, font=font)
  draw.text((right - 40, bottom + 2), f'step {s_hi:.0f}', fill=_INK, font=font)
  legend_x = left
  for label, s, v, color in lines:
    xy = [to_xy(a, b) for a, b in zip(s, v)]
    if len(xy) > 1:
      draw.line(xy, fill=color, width=2)
    for x, y in xy:
      draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=color)
    draw.text((legend_x, bottom + 14), label, fill=color, font=font)
    legend_x += 8 * len(label) + 16


def write_report_png(path: str, *, title: str, table: Mapping[str, float],
                     curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     videos_png: str | None = None,
                     rows_caption: str = 'generated | true') -> None:
  """One PNG: `title`, the metric `table` ({name: value}), a plot for each group of `CURVES` with
  data in `curves` ({tag: (steps, values)}), and the image `videos_png` (e.g. generated vs true,
  its rows in the order `rows_caption` says, per caption)."""
  font = ImageFont.load_default()
  width, plot_w, plot_h, row_h = 1200, 400, 220, 14
  panels = [(name, [(label, *curves[tag], color) for tag, label, color in group if tag in curves])
            for name, group in CURVES]
  panels = [(name, lines) for name, lines in panels if lines]
  columns = width // plot_w
  table_rows = (len(table) + 1) // 2
  plots_top = 30 + table_rows * row_h + 20
  plots_bottom = plots_top + -(-len(panels) // columns) * plot_h
  videos = Image.open(videos_png).convert('RGB') if videos_png else None
  if videos is not None and videos.width > width:
    videos = videos.resize((width, round(videos.height * width / videos.width)))
  height = plots_bottom + (24 + videos.height + 6 if videos is not None else 10)
  image = Image.new('RGB', (width, height), _BACKGROUND)
  draw = ImageDraw.Draw(image)
  draw.text((10, 8), title, fill=_INK, font=font)
  for i, (name, value) in enumerate(table.items()):  # two columns of name = value
    x, y = 10 + (i // table_rows) * (width // 2), 30 + (i % table_rows) * row_h
    shown = f'{value:.4g}' if isinstance(value, float) else str(value)
    draw.text((x, y), f'{name}', fill=_INK, font=font)
    draw.text((x + 330, y), shown, fill=_INK, font=font)
  for i, (name, lines) in enumerate(panels):
    x, y = (i % columns) * plot_w, plots_top + (i // columns) * plot_h
    _plot(draw, (x, y, x + plot_w, y + plot_h - 8), name, lines, font)
  if videos is not None:
    draw.text((10, plots_bottom + 8), f'rows per caption: {rows_caption}', fill=_INK, font=font)
    image.paste(videos, (0, plots_bottom + 24))
  image.save(path)


def _shown(value) -> str:
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def write_report_html(path: str, *, title: str, table: Mapping[str, float], report_png: str,
                      rows: Sequence[tuple[str, Mapping[str, str]]]) -> None:
  """A self-contained page next to its files: `title`, the metric `table`, the image `report_png`
  (a path relative to the page) and one table row per (caption, {kind: GIF path relative to the
  page}), the kinds as columns in their order."""
  kinds = list(rows[0][1]) if rows else []
  esc = html.escape
  lines = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">', f'<title>{esc(title)}</title>',
           '<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:left} '
           'img{image-rendering:pixelated}</style></head><body>', f'<h1>{esc(title)}</h1>',
           '<h2>Metrics</h2>', '<table>']
  lines += [f'<tr><td>{esc(name)}</td><td>{esc(_shown(value))}</td></tr>'
            for name, value in table.items()]
  lines += ['</table>', '<h2>Curves and frames</h2>', f'<img src="{esc(report_png)}">',
            '<h2>Videos</h2>', '<table>', '<tr><th>caption</th>' + ''.join(
                f'<th>{esc(kind)}</th>' for kind in kinds) + '</tr>']
  for caption, gifs in rows:
    lines.append(f'<tr><td>{esc(caption)}</td>' + ''.join(
        f'<td><img src="{esc(gifs[kind])}"></td>' for kind in kinds) + '</tr>')
  lines += ['</table>', '</body></html>']
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
