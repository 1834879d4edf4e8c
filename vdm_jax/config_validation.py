"""Every check on a config, in one place, run before any work starts.

Each failure raises `UserError` with one line naming the field, the bad value and the fix.
"""

from typing import Any, Iterable

import ml_collections

from vdm_jax import diffusion
from vdm_jax import schedules
from vdm_jax import samplers
from vdm_jax.errors import UserError

ALLOWED = {
    'model.conv_impl': ('xla', 'im2col'),
    'model.attention_impl': ('dot_product_attention', 'einsum'),  # models.attention.ATTENTION_IMPLS
    'model.remat': ('none', 'block', 'full'),  # models.unet.REMAT_MODES
    'model.dtype': ('float32', 'bfloat16'),
    'model.param_dtype': ('float32', 'bfloat16'),
    'diffusion.schedule': schedules.SCHEDULES,
    'optim.lr_schedule': ('constant', 'cosine'),
    'diffusion.parameterization': diffusion.PARAMETERIZATIONS,
    'diffusion.loss_weighting': diffusion.LOSS_WEIGHTINGS,
    'sample.sampler': samplers.SAMPLERS,
    'sample.time_spacing': samplers.TIME_SPACINGS,
    'eval.split': ('train', 'test'),
}


# Tuple fields, which config_flags fills with whatever the command line gives ('abc' -> ('abc',)).
TUPLE_FIELDS = {
    'model.channel_mult': (int, '(1, 2, 2)'),
    'model.attention_resolutions': (int, '(8,)'),
    'diffusion.betas': ((int, float), '(0.0001, 0.02)'),
    'sample.prompts': (str, "('a red circle moving left',)"),
}


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise UserError(message)


def _positive(config, fields: Iterable[str], *, allow_zero: bool = False) -> None:
  for field in fields:
    value = _get(config, field)
    ok = value >= 0 if allow_zero else value > 0
    bound = '>= 0' if allow_zero else '> 0'
    _require(ok, f'config.{field}={value!r} must be {bound}: set --config.{field} to a value {bound}.')


def video_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  """(frames, height, width, channels) of the configured dataset, without preparing it."""
  from vdm_jax.data import registry  # pylint: disable=g-import-not-at-top
  return registry.video_shape(config)


def validate(config: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
  """Raises `UserError` for the first problem found in `config`."""
  for field, allowed in ALLOWED.items():
    value = _get(config, field)
    _require(value in allowed,
             f'config.{field}={value!r} is not allowed: use one of {", ".join(map(repr, allowed))}.')

  for field, (kind, example) in TUPLE_FIELDS.items():
    value = _get(config, field)
    ok = isinstance(value, (tuple, list)) and all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value)
    kinds = 'numbers' if isinstance(kind, tuple) else f'{kind.__name__}s'
    _require(ok, f'config.{field}={value!r} is not a tuple of {kinds}: set it as '
                 f'--config.{field}="{example}".')

  _require(isinstance(config.data.name, str) and config.data.name.strip(),
           'config.data.name is empty: name a built-in or TFDS dataset.')
  from vdm_jax.data import registry  # pylint: disable=g-import-not-at-top
  registry.check_dataset(config.data)
  _positive(config, ['data.num_frames', 'data.resolution', 'data.frame_skip'])
  _require(0 <= config.data.test_fraction < 1,
           f'config.data.test_fraction={config.data.test_fraction!r} must lie in [0, 1).')
  images = config.data.num_images_per_video
  _require(isinstance(images, int) and not isinstance(images, bool) and images >= 0,
           f'config.data.num_images_per_video={images!r} must be an integer >= 0: set '
           '--config.data.num_images_per_video to a value >= 0 (0: videos only).')
  # The tracker behind caption adherence reads moving_shapes captions only (data/tracker.py).
  _require(config.data.name == 'moving_shapes' or not (config.train.eval_at_end
                                                       or config.train.eval_every),
           f'caption-adherence evaluation reads moving_shapes captions only, not '
           f'config.data.name={config.data.name!r}: set --config.train.eval_at_end=False and '
           '--config.train.eval_every=0.')
  _positive(config, ['batch_size', 'data.max_text_length', 'model.channels', 'model.num_res_blocks',
                     'model.head_dim', 'model.text_width', 'model.text_layers', 'model.text_heads',
                     'optim.learning_rate', 'train.num_steps', 'train.log_every',
                     'train.checkpoint_every', 'train.keep_checkpoints', 'train.max_consecutive_skips',
                     'sample.num_steps', 'sample.batch_size', 'sample.num_videos', 'sample.fps',
                     'eval.num_captions',
                     'diffusion.linear_num_steps', 'diffusion.min_snr_gamma'])
  _positive(config, ['optim.warmup_steps', 'optim.weight_decay', 'optim.grad_clip_norm',
                     'sample.guidance_weight', 'sample.eta', 'sample.gamma', 'model.dropout',
                     'model.cond_drop_prob', 'train.sample_every', 'train.eval_every',
                     'optim.final_lr_fraction'],
            allow_zero=True)
  for field in ('optim.ema_decay', 'optim.b1', 'optim.b2', 'model.cond_drop_prob', 'model.dropout',
                'sample.gamma'):
    value = _get(config, field)
    _require(0 <= value < 1 or (field == 'sample.gamma' and value == 1),
             f'config.{field}={value!r} must lie in [0, 1): set --config.{field} accordingly.')
  _require(0 <= config.sample.dynamic_threshold <= 1,
           f'config.sample.dynamic_threshold={config.sample.dynamic_threshold!r} must lie in [0, 1] '
           '(0: off; e.g. 0.995): set --config.sample.dynamic_threshold accordingly.')
  _require(config.diffusion.logsnr_min < config.diffusion.logsnr_max,
           f'config.diffusion.logsnr_min={config.diffusion.logsnr_min} must be below '
           f'config.diffusion.logsnr_max={config.diffusion.logsnr_max}.')
  _require(0 < config.diffusion.linear_beta_start < config.diffusion.linear_beta_end < 1,
           'config.diffusion.linear_beta_start < linear_beta_end must lie in (0, 1).')
  d = config.diffusion
  _positive(config, ['diffusion.learned_num_features', 'eval.bpd_num_t'])
  _positive(config, ['eval.bpd_num_videos'], allow_zero=True)
  _require(d.schedule != 'betas' or (len(d.betas) >= 1 and all(0 < b < 1 for b in d.betas)),
           f"config.diffusion.betas={tuple(d.betas)!r} must be a non-empty tuple of values in (0, 1) "
           "for config.diffusion.schedule='betas'.")
  _require(d.schedule != 'learned' or not d.zero_terminal_snr,
           "config.diffusion.zero_terminal_snr=True does not apply to schedule 'learned' (its "
           'endpoints are logsnr_min and logsnr_max): set one of them differently.')
  _require(d.schedule != 'learned' or d.loss_weighting == 'vlb',
           f"config.diffusion.schedule='learned' needs config.diffusion.loss_weighting='vlb' (got "
           f'{d.loss_weighting!r}): only the VLB is unchanged by the schedule it trains.')

  model = config.model
  _require(len(model.channel_mult) >= 1 and all(m > 0 for m in model.channel_mult),
           f'config.model.channel_mult={tuple(model.channel_mult)} must be a non-empty tuple of positive ints.')
  for level, mult in enumerate(model.channel_mult):
    width = model.channels * mult
    _require(width % model.head_dim == 0,
             f'config.model.channels * channel_mult[{level}] = {width} is not divisible by '
             f'config.model.head_dim={model.head_dim}: change one of them.')
    _require(width % 8 == 0 or width < 8,
             f'config.model.channels * channel_mult[{level}] = {width} must be a multiple of 8 '
             '(GroupNorm uses 8 groups): change config.model.channels.')
  _require(model.text_width % model.text_heads == 0,
           f'config.model.text_width={model.text_width} is not divisible by '
           f'config.model.text_heads={model.text_heads}.')

  frames, height, _, _ = video_shape(config)
  levels = len(model.channel_mult) - 1
  patch = model.patch_size
  _require(patch >= 1, f'config.model.patch_size={patch} must be >= 1.')
  _require(height % (patch * 2 ** levels) == 0,
           f'resolution {height} is not divisible by config.model.patch_size * 2**{levels} '
           f'(= {patch} * 2**(len(config.model.channel_mult) - 1)): use fewer levels, a smaller '
           'patch_size or another data.builder_config.')
  level_sizes = [height // patch // 2 ** i for i in range(levels + 1)]
  for res in model.attention_resolutions:
    _require(res in level_sizes,
             f'config.model.attention_resolutions contains {res}, which is not a level of the U-Net '
             f'(levels are {level_sizes} for {height}x{height} videos): use sizes from that list.')
  _require(frames >= 1, f'the dataset has {frames} frames; need at least 1.')
  split_size = registry.split_size(config, config.eval.split)  # None: known once prepared.
  _require(split_size is None or config.eval.num_captions <= split_size,
           f'config.eval.num_captions={config.eval.num_captions} exceeds the {split_size} videos of '
           f'the {config.eval.split!r} split: lower --config.eval.num_captions.')
  _require(split_size is None or config.eval.bpd_num_videos <= split_size,
           f'config.eval.bpd_num_videos={config.eval.bpd_num_videos} exceeds the {split_size} videos '
           f'of the {config.eval.split!r} split: lower --config.eval.bpd_num_videos.')

  if num_devices is not None:
    _require(config.batch_size % num_devices == 0,
             f'config.batch_size={config.batch_size} is not divisible by the {num_devices} devices: '
             f'set --config.batch_size to a multiple of {num_devices}.')
    _require(config.mesh.data in (-1, num_devices),
             f'config.mesh.data={config.mesh.data} does not match the {num_devices} devices: '
             'use -1 (all devices).')


def check_prompts(prompts: Iterable[str], *, max_text_length: int) -> None:
  """Raises `UserError` for a `--prompt` that is empty, not UTF-8, or longer than the model reads
  (the tokenizer would silently cut it)."""
  for number, prompt in enumerate(prompts, 1):
    try:
      size = len(prompt.encode('utf-8'))
    except UnicodeEncodeError:
      # The shell passed bytes that are not UTF-8; Python keeps them as lone surrogates.
      raw = prompt.encode('utf-8', 'surrogateescape')
      raise UserError(f'--prompt {raw!r} (prompt {number}) is not valid UTF-8: pass it in UTF-8 '
                      '(check the terminal\'s encoding).') from None
    _require(prompt.strip() != '',
             f'--prompt {prompt!r} (prompt {number}) is empty: give a caption, e.g. --prompt '
             '"a red circle moving left", or leave --prompt out to use config.sample.prompts.')
    shown = prompt if len(prompt) <= 40 else prompt[:40] + '...'
    _require(size <= max_text_length,
             f'--prompt {shown!r} (prompt {number}) is {size} bytes long, over the model\'s '
             f'config.data.max_text_length={max_text_length} (it would be cut): shorten it (the '
             'limit is fixed by the checkpoint\'s model).')
