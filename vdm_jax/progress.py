"""Progress a person can follow: a live bar (step, loss, steps/s, ETA) and TensorBoard scalars.

rich's bar redraws in place on a terminal and coexists with absl log lines; off a terminal (CI,
`nohup`) it stays quiet and the periodic log lines carry the same figures. TensorBoard event files
are written with tensorboardX, which needs no TensorFlow.
"""

import sys
import time

from rich import progress as rich_progress


def format_seconds(seconds: float) -> str:
  if seconds != seconds or seconds == float('inf'):  # NaN or inf before the first measurement
    return '?'
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


class TrainProgress:
  """Context manager: `update(step, loss)` after each step; knows steps/s and the ETA.

  The rate counts from the second step seen, so the first step's compilation does not skew it.
  """

  def __init__(self, *, total: int, start: int = 0, enabled: bool = True):
    self.total, self.start = total, start
    self._first_step = None  # (step, time) of the first update: the end of compilation
    self._last_step = start
    self._bar = None
    if enabled and sys.stderr.isatty():
      self._bar = rich_progress.Progress(
          rich_progress.TextColumn('step {task.completed}/{task.total}'),
          rich_progress.BarColumn(),
          rich_progress.TextColumn('loss {task.fields[loss]}'),
          rich_progress.TextColumn('{task.fields[rate]} steps/s'),
          rich_progress.TextColumn('ETA {task.fields[eta]}'),
          console=rich_progress.Console(file=sys.stderr), transient=False)

  def __enter__(self):
    if self._bar is not None:
      self._bar.start()
      self._task = self._bar.add_task('train', total=self.total, completed=self.start,
                                      loss='?', rate='?', eta='?')
    return self

  def __exit__(self, *exc):
    if self._bar is not None:
      self._bar.stop()

  def update(self, step: int, loss: float) -> None:
    now = time.perf_counter()
    if self._first_step is None:
      self._first_step = (step, now)
    self._last_step, self._last_time = step, now
    if self._bar is not None:
      self._bar.update(self._task, completed=step, loss=f'{loss:.4f}',
                       rate=f'{self.steps_per_second():.2f}', eta=self.eta())

  def steps_per_second(self) -> float:
    if self._first_step is None or self._last_step == self._first_step[0]:
      return float('nan')
    return (self._last_step - self._first_step[0]) / (self._last_time - self._first_step[1])

  def eta(self) -> str:
    rate = self.steps_per_second()
    return format_seconds((self.total - self._last_step) / rate if rate == rate and rate > 0 else float('nan'))


class MetricWriter:
  """Scalars to TensorBoard (tensorboardX) on the main process; a no-op elsewhere."""

  def __init__(self, logdir: str, *, enabled: bool = True):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(logdir)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self._writer is None:
      return
    for name, value in scalars.items():
      if value == value:  # skip NaN (e.g. steps/s before a rate is known)
        self._writer.add_scalar(name, value, step)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class _DropLibraryInfo:
  """absl log filter: drops INFO records from libraries' internals (orbax logs every file it writes)."""

  NOISY = ('/orbax/', '/jax/_src/xla_bridge', '/tensorflow_datasets/', '/tensorboardX/')

  def filter(self, record) -> bool:
    return record.levelno > 20 or not any(part in record.pathname for part in self.NOISY)


def quiet_library_logs() -> None:
  """Keeps the console to vdm_jax's own progress; libraries' warnings and errors still show."""
  import warnings  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _DropLibraryInfo) for f in handler.filters):  # Once per process.
    handler.addFilter(_DropLibraryInfo())
  # imageio-ffmpeg starts ffmpeg with subprocess; the fork happens before any JAX thread touches
  # the child, which only execs ffmpeg.
  warnings.filterwarnings('ignore', message='os.fork\\(\\) was called', category=RuntimeWarning)
