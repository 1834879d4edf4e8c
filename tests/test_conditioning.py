"""Conditioning of the denoiser: 'text' / 'class' / 'none', frame conditioning by channel
concatenation with a mask channel and noise conditioning augmentation, precomputed text
embeddings, the conditioning-embedding fields, and the checkpoint and config checks of them."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import moving_shapes as moving_shapes_experiment
from vdm_jax import checkpoints
from vdm_jax import conditioning
from vdm_jax import config_validation
from vdm_jax import diffusion
from vdm_jax import frame_conditioning
from vdm_jax import mesh as mesh_lib
from vdm_jax import sample as sample_lib
from vdm_jax import train
from vdm_jax.data import moving_shapes
from vdm_jax.data import pipeline
from vdm_jax.errors import UserError
from vdm_jax.models.unet import VideoUNet

B, T, H, W = 2, 3, 4, 4
# A U-Net small enough to compile in about a second: only the middle blocks (residual, space +
# time + text attention, residual), so frames still meet in temporal attention.
SMALL = dict(channels=8, channel_mult=(1,), num_res_blocks=0, attention_resolutions=(),
             head_dim=8, text_width=8, text_layers=1, text_heads=1, max_text_length=4)


def z_and_logsnr():
  return (jax.random.normal(jax.random.PRNGKey(0), (B, T, H, W, 3)), jnp.array([-1., 2.]))


def param_shapes(**fields):
  model = VideoUNet(**SMALL, **fields)
  z, logsnr = z_and_logsnr()
  config = moving_shapes_experiment.get_config('smoke')
  config.data.max_text_length = SMALL['max_text_length']
  config.model.text_embedding_dim = 6
  dummy = conditioning.abstract_inputs(config, model, batch_size=B, video_shape=z.shape[1:])
  return model, jax.eval_shape(model.init, jax.random.PRNGKey(1), z, logsnr=logsnr, **dummy)


@functools.lru_cache(maxsize=None)
def model_fn(**fields):
  """(apply(z, logsnr, **cond), params) of VideoUNet(**SMALL, **fields) with random params
  (drawn on the host: no init to compile; none of the zero-initialised layers stays zero)."""
  model, shapes = param_shapes(**fields)
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda a: 0.3 * rng.standard_normal(a.shape).astype(np.float32), shapes)

  @jax.jit
  def apply(params, z, logsnr, cond):
    return model.apply(params, z, logsnr=logsnr, **cond)
  return (lambda z, logsnr, **cond: np.asarray(apply(params, z, logsnr, cond))), params


def max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---------------------------------------------------------------- model: what it reads


def test_default_model_has_the_text_parameter_tree():
  """The default ('text', builtin, 4 * channels, 2-layer MLP) builds exactly the tree it always
  had: nothing of the new options (its outputs are unchanged too: checked bit for bit against
  the code before them, on tests/test_model.py's tiny model)."""
  _, params = param_shapes()
  names = set(params['params'])
  assert {'text_encoder', 'null_text', 'null_pooled', 'logsnr_mlp_0', 'logsnr_mlp_1',
          'text_pooled_proj'} <= names
  assert not names & {'class_embedding', 'text_embedding_proj', 'cond_logsnr_mlp_0',
                      'logsnr_mlp_2'}
  assert params['params']['logsnr_mlp_1']['kernel'].shape == (32, 32)  # 4 * channels
  assert params['params']['conv_in']['kernel'].shape == (3, 3, 3, 8)


def test_cond_embedding_width_and_depth():
  params = param_shapes(cond_embedding_dim=24, cond_mlp_layers=4, conditioning='none')[1]['params']
  assert [params[f'logsnr_mlp_{i}']['kernel'].shape for i in range(4)] == [(8, 24)] + [(24, 24)] * 3
  assert 'logsnr_mlp_4' not in params
  assert params['mid_res_0']['film']['kernel'].shape == (24, 16)  # FiLM reads the embedding.


def test_class_conditioning_and_its_null_class():
  apply, params = model_fn(conditioning='class', num_classes=5)
  z, logsnr = z_and_logsnr()
  assert params['params']['class_embedding']['embedding'].shape == (6, 32)  # + the null class
  a = apply(z, logsnr, labels=jnp.array([0, 1]))
  b = apply(z, logsnr, labels=jnp.array([3, 1]))
  assert max_diff(a[0], b[0]) > 1e-3 and max_diff(a[1], b[1]) == 0.0  # videos never mix
  dropped = jnp.array([True, False])
  a_null = apply(z, logsnr, labels=jnp.array([0, 1]), drop_text=dropped)
  b_null = apply(z, logsnr, labels=jnp.array([3, 1]), drop_text=dropped)
  # Dropped: the label no longer matters, and the null class is its own embedding.
  assert max_diff(a_null[0], b_null[0]) == 0.0 and max_diff(a_null[0], a[0]) > 1e-3
  explicit_null = apply(z, logsnr, labels=jnp.array([5, 1]))
  np.testing.assert_allclose(explicit_null[0], a_null[0], atol=1e-6)


def test_precomputed_text_embeddings():
  apply, params = model_fn(text_encoder='precomputed')
  assert 'text_encoder' not in params['params']
  assert params['params']['text_embedding_proj']['kernel'].shape == (6, 8)  # D -> text_width
  z, logsnr = z_and_logsnr()
  embedding = jax.random.normal(jax.random.PRNGKey(3), (B, 4, 6))
  mask = jnp.array([[True, True, False, False], [True, True, True, False]])
  out = apply(z, logsnr, text_embedding=embedding, text_embedding_mask=mask)
  # Padding (mask False) is never read; a real position is.
  padded = embedding.at[:, 3].set(100.0)
  assert max_diff(out, apply(z, logsnr, text_embedding=padded, text_embedding_mask=mask)) < 1e-5
  changed = embedding.at[:, 0].add(1.0)
  assert max_diff(out, apply(z, logsnr, text_embedding=changed, text_embedding_mask=mask)) > 1e-3


# ---------------------------------------------------------------- frame conditioning


def test_given_frames_reach_the_other_frames_through_the_mask():
  """(An unconditional model: 'none' also reads no text or class, and ignores drop_text.)"""
  apply, params = model_fn(conditioning='none', frame_conditioning=True)
  assert params['params']['conv_in']['kernel'].shape == (3, 3, 3 + 3 + 1, 8)
  assert not {'text_encoder', 'null_text', 'class_embedding'} & set(params['params'])
  z, logsnr = z_and_logsnr()
  frames = jax.random.normal(jax.random.PRNGKey(4), z.shape)
  mask = jnp.array([[True, False, False]] * B)
  kw = dict(cond_logsnr=jnp.array([5., 5.]))
  out = apply(z, logsnr, cond_frames=frames, cond_mask=mask, **kw)
  assert max_diff(out, apply(z, logsnr, cond_frames=frames, cond_mask=mask, **kw,
                             drop_text=jnp.array([True, True]))) == 0.0
  moved = frames.at[:, 0].add(1.0)
  out_moved = apply(z, logsnr, cond_frames=moved, cond_mask=mask, **kw)
  # A given frame changes the prediction of frames not given (through temporal attention) ...
  assert max_diff(out[:, 2], out_moved[:, 2]) > 1e-4
  # ... a frame not given is never read, whatever the array holds there ...
  other = frames.at[:, 1:].set(7.0)
  assert max_diff(out, apply(z, logsnr, cond_frames=other, cond_mask=mask, **kw)) == 0.0
  # ... and the mask channel itself is an input: zero frames given as frames differ from none.
  zeros = jnp.zeros_like(frames)
  assert max_diff(apply(z, logsnr, cond_frames=zeros, cond_mask=mask, **kw),
                  apply(z, logsnr, cond_frames=zeros, cond_mask=~mask, **kw)) > 1e-4
  # The augmentation log-SNR is an input too.
  assert max_diff(out, apply(z, logsnr, cond_frames=frames, cond_mask=mask,
                             cond_logsnr=jnp.array([-5., -5.]))) > 1e-4


def frame_config(mode='first', k=2, logsnr=(1.5, 1.5)):
  config = moving_shapes_experiment.get_config('smoke')
  config.model.frame_conditioning = True
  config.train.cond_frames, config.train.num_cond_frames = mode, k
  config.train.cond_aug_logsnr_min, config.train.cond_aug_logsnr_max = logsnr
  return config


def test_noise_augmentation_is_the_forward_process_at_the_configured_logsnr(x64):
  lam = 1.5
  video = jax.random.uniform(jax.random.PRNGKey(5), (4, 6, 8, 8, 3), jnp.float64, -1, 1)
  n = 4 * 2 * 8 * 8 * 3  # noise samples on the given frames
  cond, weights = jax.jit(functools.partial(train.frame_conditioning_inputs,
                                            frame_config(k=2, logsnr=(lam, lam))))(
                                                video, jax.random.PRNGKey(6))
  np.testing.assert_array_equal(cond['cond_logsnr'], np.full(4, lam))
  np.testing.assert_array_equal(cond['cond_mask'], np.arange(6)[None] < np.full((4, 1), 2))
  np.testing.assert_array_equal(weights, 1.0 - np.asarray(cond['cond_mask'], np.float64))
  c = np.asarray(cond['cond_frames'])
  assert np.all(c[:, 2:] == 0)  # frames not given are zeros
  alpha, sigma = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
  eps = (c[:, :2] - alpha * np.asarray(video[:, :2])) / sigma  # what the noise must have been
  # N(0, 1): mean and standard deviation within 5 standard errors.
  assert abs(eps.mean()) < 5 / np.sqrt(n) and abs(eps.std() - 1) < 5 / np.sqrt(2 * n), eps.std()
  # The closed form, for a given noise: c = m (alpha x + sigma eps).
  noise = jax.random.normal(jax.random.PRNGKey(7), video.shape, jnp.float64)
  got = frame_conditioning.augment(video, mask=cond['cond_mask'], logsnr=jnp.full(4, lam),
                                   noise=noise)
  np.testing.assert_allclose(got[:, :2], alpha * video[:, :2] + sigma * noise[:, :2], rtol=1e-12)


def test_dropped_given_frames_leave_a_share_of_the_videos_unconditioned():
  """train.cond_drop_prob = 0.25: a quarter of the training videos are given no frame (zeros, mask
  all False, the loss over every frame); the rest their first k, as without dropping."""
  config = frame_config(k=2)
  config.train.cond_drop_prob = 0.25
  video = jax.random.uniform(jax.random.PRNGKey(5), (8000, 4, 2, 2, 3), jnp.float32, 0.5, 1)
  cond, weights = jax.jit(functools.partial(train.frame_conditioning_inputs, config))(
      video, jax.random.PRNGKey(6))
  mask, c = np.asarray(cond['cond_mask']), np.asarray(cond['cond_frames'])
  dropped = ~mask.any(axis=1)
  assert abs(dropped.mean() - 0.25) < 0.02  # 5 standard errors
  assert np.all(mask[~dropped] == (np.arange(4) < 2))
  assert np.all(c[dropped] == 0) and np.all(np.asarray(weights)[dropped] == 1)
  assert np.all(c[~dropped][:, :2] != 0)
  np.testing.assert_array_equal(weights, 1.0 - mask)


def test_random_given_frames_are_k_of_the_video_never_an_image():
  mask = np.asarray(frame_conditioning.given_frames_mask(
      jax.random.PRNGKey(0), batch_size=64, num_frames=8, num_given=3, mode='random', num_images=2))
  assert np.all(mask.sum(1) == 3) and not mask[:, 6:].any()
  assert len({tuple(row) for row in mask}) > 10  # drawn anew per example
  with pytest.raises(ValueError, match="allowed values: \\('first', 'random', 'low_res', 'low_frame_rate'\\)"):
    frame_conditioning.check_cond_frames('last')


def test_loss_leaves_the_given_frames_out(x64):
  """With frame weights 1 - mask, the loss is the mean over the frames not given only: the
  given frames' data do not change it, and it equals the plain loss of those frames."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 2, 2, 3), jnp.float64, -1, 1)
  net = lambda z, logsnr: 0.5 * z
  weights = jnp.array([[0., 1., 1., 1.], [0., 0., 1., 1.], [0., 1., 1., 1.]])
  kw = dict(rng=jax.random.PRNGKey(1), logsnr_fn=lambda t: 10 - 20 * t, parameterization='eps')
  loss = jax.jit(lambda x, w: diffusion.per_example_loss(net, x, **kw, frame_weights=w)[0])
  per_example = loss(x, weights)
  np.testing.assert_allclose(loss(x.at[:, 0].add(3.0), weights), per_example, rtol=1e-12)
  full = loss(x, jnp.ones_like(weights))  # all frames weighted 1: the plain loss
  # Closed form of the weighted mean, from the same t and noise: per-frame MSE of eps.
  t = diffusion.sample_time(jax.random.split(kw['rng'])[0], 3, dtype=jnp.float64)
  noise = jax.random.normal(jax.random.split(kw['rng'])[1], x.shape, jnp.float64)
  z = diffusion.q_sample(x, logsnr=kw['logsnr_fn'](t), noise=noise)
  per_frame = np.mean(np.square(0.5 * np.asarray(z) - np.asarray(noise)), axis=(2, 3, 4))
  expected = np.sum(weights * per_frame, 1) / np.sum(weights, 1)
  np.testing.assert_allclose(per_example, expected, rtol=1e-12)
  np.testing.assert_allclose(full, per_frame.mean(1), rtol=1e-12)


class RecordingDenoiser(nn.Module):
  """A stand-in denoiser (out = w z + what it is conditioned on) that reads what a real model of
  `conditioning` would, and checks its batch (no doubled batch without guidance)."""
  conditioning: str = 'none'
  frame_conditioning: bool = False
  batch: int = 2

  def conditioning_inputs(self):
    return ({'none': (), 'class': ('labels',)}[self.conditioning]
            + (('cond_frames', 'cond_mask', 'cond_logsnr') if self.frame_conditioning else ()))

  @nn.compact
  def __call__(self, z, *, logsnr, labels=None, cond_frames=None, cond_mask=None,
               cond_logsnr=None, drop_text=None, train=False, num_images=0):
    assert z.shape[0] == self.batch, z.shape  # guidance would double it
    out = self.param('w', nn.initializers.constant(0.5), ()) * z
    if labels is not None:
      out = out + jnp.where(drop_text, 0.0, labels.astype(z.dtype))[:, None, None, None, None]
    if cond_frames is not None:
      out = out + jnp.mean(cond_frames, axis=1, keepdims=True)
    return out


def generate_fn(config, model, video_shape=(3, 4, 4, 3)):
  config.sample.num_steps, config.sample.batch_size = 2, 2
  mesh = mesh_lib.make_mesh(config)
  return sample_lib.make_generate_fn(model, logsnr_fn=train.create_logsnr_fn(config),
                                     config=config, video_shape=video_shape, mesh=mesh)


def test_sampling_without_guidance_for_none_and_given_frames_returned_as_given():
  config = frame_config(k=1)
  config.model.conditioning = 'none'
  config.sample.guidance_weight = 3.0  # ignored: an unconditional model has nothing to guide
  model = RecordingDenoiser('none', frame_conditioning=True, batch=2)
  params = {'w': jnp.float32(0.5)}
  generate = generate_fn(config, model)
  frames = np.random.default_rng(0).integers(0, 256, (3, 3, 4, 4, 3), dtype=np.uint8)
  videos = generate(params, ['anything'] * 3, jax.random.PRNGKey(0), frames=frames)
  assert videos.shape == (3, 3, 4, 4, 3) and videos.dtype == np.uint8
  np.testing.assert_array_equal(videos[:, 0], frames[:, 0])  # the given frame, as given
  assert np.any(videos[:, 1:] != frames[:, 1:])
  with pytest.raises(ValueError, match='needs `frames`'):
    generate(params, ['x'], jax.random.PRNGKey(0))


def test_class_sampling_reads_prompts_as_class_indices_or_names():
  names = moving_shapes.class_names()
  assert len(names) == 168 and names[0] == 'a red circle moving left'
  assert [moving_shapes.label_of_caption(n) for n in names] == list(range(168))
  with pytest.raises(ValueError, match='single-object'):
    moving_shapes.label_of_caption('a red circle moving left and a blue square moving up')
  labels = conditioning.labels_of_prompts(
      ['2', 'ApplyEyeMakeup', 'apply eye makeup', 'a video of playing guitar'], num_classes=3,
      names=('Surfing', 'ApplyEyeMakeup', 'PlayingGuitar'))
  np.testing.assert_array_equal(labels, [2, 1, 1, 2])
  with pytest.raises(UserError, match="not a class.*such as 'Surfing'"):
    conditioning.labels_of_prompts(['juggling'], num_classes=3, names=('Surfing', 'A', 'B'))
  config = moving_shapes_experiment.get_config('smoke')
  config.model.conditioning, config.model.num_classes = 'class', 168
  config.sample.guidance_weight = 1.0
  inputs = conditioning.prompt_inputs(config, ['a green square moving up', '7', ''])
  np.testing.assert_array_equal(inputs['labels'],
                                [moving_shapes.label_of_caption('a green square moving up'), 7, 0])
  # Guided: the conditional and null-class passes in one doubled batch; eps is linear in the
  # label (out = w z + label, 0 when dropped), so guidance moves x by a label-proportional shift.
  generate = generate_fn(config, RecordingDenoiser('class', batch=4))
  videos = generate({'w': jnp.float32(0.5)}, ['0', '0', '3'], jax.random.PRNGKey(0))
  assert videos.shape == (3, 3, 4, 4, 3)
  assert np.mean(videos[2].astype(float)) != np.mean(videos[0].astype(float))


# ---------------------------------------------------------------- data


class FakeBuilder:
  """A dataset of 6 one-object moving-shapes-like clips, captions only (labels come from
  `label_of_caption`, as for moving_shapes)."""
  label_of_caption = staticmethod(moving_shapes.label_of_caption)

  def __init__(self, extra=None):
    names = moving_shapes.class_names()
    self.examples = [dict(video=np.full((2, 4, 4, 3), i, np.uint8), caption=names[10 * i],
                          file=f'v{i}.gif', **(extra(i) if extra else {})) for i in range(6)]

  def as_data_source(self, split):
    del split
    return self.examples


def first_batch(builder, **kw):
  ds = pipeline.make_train_dataset(builder=builder, split='train', global_batch_size=3, seed=0,
                                   max_text_length=4, process_index=0, process_count=1, **kw)
  return ds[0]


def test_batches_carry_labels_from_captions():
  batch = first_batch(FakeBuilder(), labels=True)
  videos = batch['video'][:, 0, 0, 0, 0]
  index = np.round((videos + 1) * 127.5).astype(int)  # which example each one is
  np.testing.assert_array_equal(batch['label'], 10 * index)
  assert 'label' not in first_batch(FakeBuilder())  # only when asked for


def test_batches_carry_precomputed_text_embeddings(tmp_path):
  # As a TFDS feature: [L, D] per example, cut/padded to max_text_length, mask from non-zero rows.
  stored = lambda i: {'text_embedding': np.concatenate(
      [np.full((2, 5), i + 1.0, np.float32), np.zeros((1, 5), np.float32)])}
  batch = first_batch(FakeBuilder(stored), text_embeddings=True)
  index = np.round((batch['video'][:, 0, 0, 0, 0] + 1) * 127.5).astype(int)
  assert batch['text_embedding'].shape == (3, 4, 5)
  np.testing.assert_array_equal(batch['text_embedding'][:, 0, 0], index + 1.0)
  np.testing.assert_array_equal(batch['text_embedding_mask'], [[True, True, False, False]] * 3)
  # As a video_folder's text_embeddings.npz, looked up by the example's file.
  np.savez(tmp_path / pipeline.TEXT_EMBEDDINGS_FILE, files=np.array([f'v{i}.gif' for i in range(6)]),
           text_embedding=np.arange(6 * 3 * 2, dtype=np.float32).reshape(6, 3, 2) + 1,
           text_embedding_mask=np.array([[True, False, False]] * 6))
  builder = FakeBuilder()
  builder.builder_config = type('Config', (), {'video_dir': str(tmp_path)})()
  batch = first_batch(builder, text_embeddings=True)
  index = np.round((batch['video'][:, 0, 0, 0, 0] + 1) * 127.5).astype(int)
  np.testing.assert_array_equal(batch['text_embedding'][:, 0, 0], index * 6 + 1.0)
  np.testing.assert_array_equal(batch['text_embedding_mask'], [[True, False, False, False]] * 3)
  with pytest.raises(UserError, match='needs precomputed text embeddings'):
    first_batch(FakeBuilder(), text_embeddings=True)


# ---------------------------------------------------------------- config and checkpoints


def test_config_checks_name_the_field():
  config = moving_shapes_experiment.get_config('smoke')
  config.model.conditioning = 'label'
  with pytest.raises(UserError, match="config.model.conditioning='label'.*'text', 'class', 'none'"):
    config_validation.validate(config)
  config.model.conditioning = 'class'
  with pytest.raises(UserError, match='config.model.num_classes=0 must be > 0'):
    config_validation.validate(config)
  config.model.num_classes = 10
  with pytest.raises(UserError, match='moving_shapes has 168 classes.*num_classes=168'):
    config_validation.validate(config)
  config = frame_config(k=16)
  config.eval.bpd_num_videos = 0
  with pytest.raises(UserError, match=r'num_cond_frames=16 must lie in \[1, 16\)'):
    config_validation.validate(config)


def test_checkpoint_of_another_conditioning_is_refused_and_old_ones_restore_as_text():
  checkpointer = object.__new__(checkpoints.Checkpointer)
  checkpointer.directory = '/ckpt'
  config = moving_shapes_experiment.get_config('smoke')
  saved = checkpoints._normalise(config.to_dict())  # pylint: disable=protected-access
  for field in checkpoints.ADDED_FIELDS['model']:  # as written before these fields existed
    del saved['model'][field]
  checkpointer.saved_config = lambda step: saved
  checkpointer.check_compatible(5, config)  # an old text checkpoint restores into the default
  config.model.conditioning = 'class'
  with pytest.raises(UserError, match="conditioning='text' but this run has 'class'"):
    checkpointer.check_compatible(5, config)
  config.model.conditioning = 'text'
  config.model.frame_conditioning = True
  with pytest.raises(UserError, match='frame_conditioning=False but this run has True'):
    checkpointer.check_compatible(5, config)
