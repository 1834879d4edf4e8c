"""Bad input at the command line: one line `error: ...` naming the problem and the fix, exit code
2, no traceback (unless --verbose), and every file left as it was (README, "Bad input").

The cases run `launch.cli` in this process (importing JAX per case would cost seconds); two real
processes check the exit code and stderr end to end.
"""

import os
import subprocess
import sys

from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

import launch
from tests.smoke import tree_digest
from vdm_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, 'experiments', 'moving_shapes.py') + ':smoke'
NO_EVAL = ['--config.train.eval_at_end=False', '--config.train.eval_every=0']


class UnpreparedManualVideos(tfds.core.GeneratorBasedBuilder):
  """A TFDS video dataset built from files the user downloads by hand: not preparable here."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the videos in manual_dir.'
  code_path = epath.Path(__file__)

  def _info(self):
    video = tfds.features.Tensor(shape=(16, 32, 32, 3), dtype=np.uint8,
                                 encoding=tfds.features.Encoding.BYTES)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({'video': video, 'caption': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(list(dl_manager.manual_dir.iterdir()))}

  def _generate_examples(self, files):
    del files  # Never reached: there is no manual_dir.
    yield from ()


def refuse(capsys, workdir, *args) -> str:
  """Runs launch.py's `cli` on args; checks exit code 2, a last stderr line `error: ...`, no
  traceback and `workdir` as it was (absent: still absent). Returns the error line."""
  before = tree_digest(workdir) if os.path.exists(workdir) else None
  code = launch.cli(['launch.py', *args, '--workdir', str(workdir)])
  stderr = capsys.readouterr().err
  assert code == 2, stderr
  assert stderr.strip().splitlines()[-1].startswith('error: '), stderr
  assert 'Traceback' not in stderr
  if before is None:
    assert not os.path.exists(workdir), tree_digest(workdir)
  else:
    assert tree_digest(workdir) == before
  return stderr.strip().splitlines()[-1]


@pytest.fixture
def smoke_args(tmp_path):
  """The smoke experiment, its data (if ever prepared) in a temporary directory."""
  return ['--config', SMOKE, f'--config.data.data_dir={tmp_path / "tfds"}']


@pytest.fixture(params=['absent', 'holding files'])
def workdir(request, tmp_path):
  """A workdir that does not exist yet, or one holding files (which must be left as they were)."""
  path = tmp_path / 'run'
  if request.param == 'holding files':
    (path / 'notes').mkdir(parents=True)
    (path / 'notes' / 'todo.txt').write_text('keep me')
  return path


# Each: (arguments after the config, what the error line must contain).
REFUSED = {
    'unknown field': (['--config.train.num_stepz=3'],
                      "--config.train.num_stepz: config.train.num_stepz is not a config field "
                      "(did you mean 'num_steps'?)"),
    'wrong type': (['--config.batch_size=abc'],
                   '--config.batch_size=abc is not of type int'),
    'wrong type in a tuple': (['--config.model.channel_mult=abc'],
                              "config.model.channel_mult=('abc',) is not a tuple of ints"),
    'frames < 1': (['--config.data.num_frames=0'],
                   'config.data.num_frames=0 must be > 0'),
    'resolution vs levels': (['--config.model.channel_mult=(1, 1, 1, 1, 1, 1)'],
                             'resolution 32 is not divisible by config.model.patch_size * 2**5'),
    'negative learning rate': (['--config.optim.learning_rate=-0.1'],
                               'config.optim.learning_rate=-0.1 must be > 0'),
    'negative guidance weight': (['--config.sample.guidance_weight=-1'],
                                 'config.sample.guidance_weight=-1.0 must be >= 0'),
    'DDIM eta above 1': (['--config.sample.eta=1.5'], 'config.sample.eta=1.5 must lie in [0, 1]'),
    'unknown sampler': (['--config.sample.sampler=ddpm'],
                        "config.sample.sampler='ddpm' is not allowed: use one of"),
    'unknown schedule': (['--config.diffusion.schedule=cosin'],
                         "config.diffusion.schedule='cosin' is not allowed: use one of"),
    'unknown dataset': (['--config.data.name=moving_shape', *NO_EVAL],
                        "config.data.name='moving_shape' is neither a built-in dataset"),
    'unknown dataset in sample mode': (['--config.data.name=moving_shape', *NO_EVAL, '--mode=sample'],
                                       "config.data.name='moving_shape' is neither"),
    'layout gate without the layout embedding': (
        ['--config.model.layout_embedding_gate=sigma2'],
        "gates the layout embedding, which is off: add --config.model.layout_embedding=True"),
    'layout detach without the layout embedding': (
        ['--config.model.layout_embedding_detach=True'],
        'detaches the layout embedding, which is off: add --config.model.layout_embedding=True'),
    'unknown layout gate': (['--config.model.layout_embedding=True',
                             '--config.model.layout_embedding_gate=sigma'],
                            "config.model.layout_embedding_gate='sigma' is not allowed"),
    'non-positive layout gate sharpness': (['--config.model.layout_embedding=True',
                                            '--config.model.layout_embedding_gate=sigma2',
                                            '--config.model.layout_embedding_gate_sharpness=0.0'],
                                           'config.model.layout_embedding_gate_sharpness=0.0 must be > 0'),
    'unknown eval task': (['--config.eval.task=extend'], "config.eval.task='extend' is not allowed"),
    'cudnn attention in float32': (['--config.model.attention_impl=cudnn'],
                                   "config.model.attention_impl='cudnn' needs 16-bit inputs"),
    'negative CPU device count': (['--config.mesh.cpu_devices=-1'],
                                  'config.mesh.cpu_devices=-1 must be an integer >= 0'),
    'step in train mode': (['--step=2'], '--step=2 picks the checkpoint of --mode sample or eval, '
                           'not --mode train: drop --step'),
    'sample without checkpoint': (['--mode=sample'], 'no checkpoint in '),
    'eval without checkpoint': (['--mode=eval'], 'no checkpoint in '),
    'empty prompt': (['--mode=sample', '--prompt='], "--prompt '' (prompt 1) is empty"),
    # As Python receives the bytes b'caf\xe9' (Latin-1) from the shell: a lone surrogate.
    'non-UTF-8 prompt': (['--mode=sample', '--prompt=a red circle', '--prompt=caf\udce9'],
                         "--prompt b'caf\\xe9' (prompt 2) is not valid UTF-8"),
    # 53 characters but 66 bytes: the limit counts the tokenizer's bytes.
    'over-long prompt': (['--mode=sample', '--config.model.text_tokenizer=bytes',
                          '--prompt=' + 'a' * 40 + 'é' * 13],
                         'is 66 bytes long, over the model\'s config.data.max_text_length=64'),
    # The same prompt is 1 word; 65 words are over the limit of 'words' tokens.
    'over-long prompt in words': (['--mode=sample', '--config.model.text_tokenizer=words',
                                   '--prompt=' + 'red ' * 65],
                                  'is 65 words long, over the model\'s config.data.max_text_length=64'),
}


@pytest.mark.parametrize('case', REFUSED)
def test_refused_in_one_line(case, capsys, smoke_args, tmp_path):
  args, expected = REFUSED[case]
  assert expected in refuse(capsys, tmp_path / 'run', *smoke_args, *args)


@pytest.mark.parametrize('name', ['missing', 'without get_config'])
def test_bad_config_file(name, capsys, tmp_path):
  path = tmp_path / 'config.py'
  if name == 'without get_config':
    path.write_text('CONFIG = 1\n')
  line = refuse(capsys, tmp_path / 'run', f'--config={path}')
  assert line.startswith(f'error: --config={path}')
  assert ('no such file or directory' if name == 'missing' else 'has no get_config()') in line


def test_unprepared_dataset_names_the_build_command(capsys, smoke_args, workdir, tmp_path):
  line = refuse(capsys, workdir, *smoke_args, '--config.data.name=unprepared_manual_videos',
                '--config.data.builder_config=default', *NO_EVAL,
                f'--config.data.manual_dir={tmp_path / "none"}')
  assert "TFDS dataset 'unprepared_manual_videos' is not prepared in" in line
  assert 'tfds build unprepared_manual_videos' in line


def test_video_folder_without_readable_videos(capsys, smoke_args, workdir, tmp_path):
  videos = tmp_path / 'videos'
  videos.mkdir()
  (videos / 'broken.mp4').write_bytes(b'not a video')
  line = refuse(capsys, workdir, *smoke_args, '--config.data.name=video_folder',
                f'--config.data.video_dir={videos}', *NO_EVAL)
  assert f'{videos} has no readable video of at least 16 frames' in line
  assert 'broken.mp4' in line


@pytest.mark.xdist_group('resumed_run')  # With test_train.py: one worker builds the resumed run.
def test_checkpoint_of_another_model_is_refused_and_untouched(capsys, smoke_data_dir,
                                                              resumed_workdir):
  line = refuse(capsys, resumed_workdir, '--config', SMOKE,
                f'--config.data.data_dir={smoke_data_dir}', '--config.train.num_steps=6',
                *NO_EVAL, '--config.model.channels=32')
  assert 'was trained with config.model.channels=16 but this run has 32' in line


def test_verbose_shows_the_traceback(smoke_args, tmp_path):
  with pytest.raises(UserError, match='no checkpoint in'):
    launch.cli(['launch.py', *smoke_args, '--mode=sample', '--workdir', str(tmp_path), '--verbose'])
  with pytest.raises(AttributeError, match='num_stepz'):
    launch.cli(['launch.py', *smoke_args, '--config.train.num_stepz=3', '--workdir',
                str(tmp_path), '--verbose'])


def run_launch(*args, env=None):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=env)


def test_process_exits_2_without_traceback(tmp_path):
  """The whole path in a real process: a flag error (raised before `main`), and a batch size that
  does not divide over 2 devices (found inside it)."""
  workdir = tmp_path / 'run'
  result = run_launch('--config', SMOKE, '--workdir', str(workdir), '--config.train.num_stepz=3')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: --config.train.num_stepz: config.train.num_stepz is not a config field (did you "
      "mean 'num_steps'?): fix the name (experiments/base.py lists every field)."]

  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '')
             + ' --xla_force_host_platform_device_count=2')
  result = run_launch('--config', SMOKE, '--workdir', str(workdir), '--config.batch_size=3',
                      f'--config.data.data_dir={tmp_path / "tfds"}', env=env)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      'error: config.batch_size=3 is not divisible by the 2 devices: set --config.batch_size to a '
      'multiple of 2.')
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()
