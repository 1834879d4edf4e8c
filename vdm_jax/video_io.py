"""Writing videos for people to look at: animated GIF, MP4 and PNG grids of frames.

Small videos (32x32) are upscaled with nearest-neighbour so that pixels stay crisp on screen.
"""

import os
from typing import Sequence

import imageio.v2 as imageio
import numpy as np


def to_uint8(video: np.ndarray) -> np.ndarray:
  """Maps floats in [-1, 1] to uint8 in [0, 255] (the inverse of the input pipeline's scaling)."""
  video = np.asarray(video, dtype=np.float32)
  return np.clip(np.round((video + 1.0) * 127.5), 0, 255).astype(np.uint8)


def upscale(video: np.ndarray, min_size: int = 128) -> np.ndarray:
  """Nearest-neighbour upscaling of [..., H, W, C] by an integer factor to at least `min_size`."""
  height = video.shape[-3]
  factor = max(1, -(-min_size // height))
  return video.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_gif(path: str, video: np.ndarray, *, fps: int = 8) -> None:
  """video: uint8 [frames, height, width, 3]; loops forever."""
  imageio.mimsave(path, list(upscale(video)), duration=1000.0 / fps, loop=0)


def write_mp4(path: str, video: np.ndarray, *, fps: int = 8) -> None:
  """video: uint8 [frames, height, width, 3]; H.264 through imageio-ffmpeg (bundled ffmpeg, offline)."""
  frames = upscale(video)
  with imageio.get_writer(path, fps=fps, codec='libx264', quality=8, pixelformat='yuv420p',
                          macro_block_size=16, ffmpeg_log_level='error') as writer:
    for frame in frames:
      writer.append_data(frame)


def frame_grid(videos: np.ndarray, *, pad: int = 2) -> np.ndarray:
  """videos: uint8 [rows, frames, height, width, 3] -> one image, a row per video, a column per frame."""
  rows, frames, height, width, channels = videos.shape
  grid = np.full((rows * (height + pad) + pad, frames * (width + pad) + pad, channels), 64, np.uint8)
  for r in range(rows):
    for f in range(frames):
      y, x = pad + r * (height + pad), pad + f * (width + pad)
      grid[y:y + height, x:x + width] = videos[r, f]
  return grid


def write_grid_png(path: str, videos: np.ndarray) -> None:
  """videos: uint8 [rows, frames, height, width, 3]."""
  imageio.imwrite(path, frame_grid(upscale(videos, min_size=64)))


def write_labelled_grid_png(path: str, labels: Sequence[str], videos: np.ndarray) -> None:
  """One PNG for several prompts: a row per video (frames left to right), its label on the left.

  videos: uint8 [rows, frames, height, width, 3]; labels: one per row.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  grid = frame_grid(upscale(videos, min_size=64))
  row_height = (grid.shape[0] - 2) // len(labels)
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  label_width = 12 + int(max(measure.textlength(label) for label in labels))
  canvas = Image.new('RGB', (label_width + grid.shape[1], grid.shape[0]), (64, 64, 64))
  canvas.paste(Image.fromarray(grid), (label_width, 0))
  draw = ImageDraw.Draw(canvas)
  for row, label in enumerate(labels):
    draw.text((4, 2 + row * row_height + row_height // 2 - 6), label, fill=(255, 255, 255))
  canvas.save(path)


def slug(text: str, max_length: int = 60) -> str:
  """A file-name-safe version of a prompt: 'a red circle moving left' -> 'a_red_circle_moving_left'."""
  kept = ''.join(c if c.isalnum() else '_' for c in text.strip().lower())
  return '_'.join(filter(None, kept.split('_')))[:max_length] or 'empty'


def write_prompt_videos(directory: str, prompts: Sequence[str], videos: np.ndarray, *,
                        fps: int) -> list[str]:
  """Writes, per prompt, GIF + MP4 of each video and one PNG grid of its videos; and one labelled
  PNG of every prompt's videos (`all_prompts.png`).

  videos: uint8 [num_prompts, videos_per_prompt, frames, height, width, 3]. Returns written paths.
  """
  os.makedirs(directory, exist_ok=True)
  written = []
  for index, (prompt, prompt_videos) in enumerate(zip(prompts, videos)):
    stem = os.path.join(directory, f'{index:02d}_{slug(prompt)}')
    for k, video in enumerate(prompt_videos):
      for suffix, writer in (('gif', write_gif), ('mp4', write_mp4)):
        path = f'{stem}_{k}.{suffix}'
        writer(path, video, fps=fps)
        written.append(path)
    write_grid_png(f'{stem}_grid.png', prompt_videos)
    written.append(f'{stem}_grid.png')
  overview = os.path.join(directory, 'all_prompts.png')
  write_labelled_grid_png(overview, [p for p in prompts for _ in range(videos.shape[1])],
                          videos.reshape(-1, *videos.shape[2:]))
  written.append(overview)
  return written
