"""The evaluation picture (vdm_jax/eval_report.py): TensorBoard scalars read back without
TensorFlow, and the report PNG."""

import numpy as np
from PIL import Image
from tensorboardX import SummaryWriter

from vdm_jax import eval_report


def test_read_scalars_round_trip(tmp_path):
  writer = SummaryWriter(str(tmp_path / 'tensorboard'))
  for step in (10, 20, 30):
    writer.add_scalar('train/loss', 1.0 / step, step)
  writer.add_scalar('eval/fvd_learned/generated', 12.5, 30)
  writer.add_scalar('train/loss', 0.25, 20)  # a resumed run writes step 20 again: the last wins
  writer.close()
  curves = eval_report.read_scalars(str(tmp_path / 'tensorboard'))
  np.testing.assert_array_equal(curves['train/loss'][0], [10, 20, 30])
  np.testing.assert_allclose(curves['train/loss'][1], [0.1, 0.25, 1 / 30], rtol=1e-6)
  np.testing.assert_array_equal(curves['eval/fvd_learned/generated'][0], [30])
  assert eval_report.read_scalars(str(tmp_path / 'empty')) == {}


def test_report_png_has_table_plots_and_videos(tmp_path):
  videos = np.zeros((40, 600, 3), np.uint8)
  videos[:, :, 1] = 200  # a green strip where the video grid goes
  Image.fromarray(videos).save(tmp_path / 'videos.png')
  curves = {'train/loss': (np.array([1, 2, 3]), np.array([3.0, 2.0, 1.5])),
            'eval/fvd_learned/generated': (np.array([2, 3]), np.array([40.0, 30.0])),
            'eval/fvd_learned/floor': (np.array([2, 3]), np.array([5.0, 5.0]))}
  path = str(tmp_path / 'report.png')
  eval_report.write_report_png(path, title='Evaluation at step 3', curves=curves,
                               table={'fvd_learned/generated': 30.0, 'step': 3},
                               videos_png=str(tmp_path / 'videos.png'))
  image = np.asarray(Image.open(path))
  assert image.shape[1] == 1200
  # Two panels (loss; FVD with its floor), in one row of plots, then the videos at the bottom.
  blue = np.all(image == (31, 119, 180), axis=-1)
  gray = np.all(image == (127, 127, 127), axis=-1)
  assert blue[:, :400].sum() > 50 and blue[:, 400:800].sum() > 50 and blue[:, 800:].sum() == 0
  assert gray[:, 400:800].sum() > 50  # the floor line
  np.testing.assert_array_equal(image[-46:-6, :600], videos)  # 6 px margin below
