"""Every check on a config, in one place, run before any work starts.

Each failure raises `UserError` with one line naming the field, the bad value and the fix.
"""

from typing import Any, Iterable

import math
import ml_collections

from vdm_jax import diffusion
from vdm_jax import frame_conditioning
from vdm_jax import guidance
from vdm_jax import metrics as metrics_lib
from vdm_jax import tasks
from vdm_jax import noise_prior
from vdm_jax import schedules
from vdm_jax import samplers
from vdm_jax.data import tokenizer
from vdm_jax.errors import UserError
from vdm_jax.metrics import c3d
from vdm_jax.models import attention
from vdm_jax.models import layers
from vdm_jax.models import unet

ALLOWED = {
    'model.conditioning': unet.CONDITIONINGS,
    'model.text_encoder': unet.TEXT_ENCODERS,
    'model.text_tokenizer': tokenizer.TOKENIZERS,
    'train.cond_frames': frame_conditioning.COND_FRAMES,
    'model.conv_impl': layers.CONV_IMPLS,
    'model.attention_impl': attention.ATTENTION_IMPLS,
    'model.remat': ('none', 'block', 'full'),  # models.unet.REMAT_MODES
    'model.layout_embedding_gate': layers.LAYOUT_EMBEDDING_GATES,
    'model.dtype': ('float32', 'bfloat16'),
    'model.param_dtype': ('float32', 'bfloat16'),
    'diffusion.schedule': schedules.SCHEDULES,
    'optim.lr_schedule': ('constant', 'cosine'),
    'diffusion.parameterization': diffusion.PARAMETERIZATIONS,
    'diffusion.loss_weighting': diffusion.LOSS_WEIGHTINGS,
    'diffusion.train_time_distribution': diffusion.TIME_DISTRIBUTIONS,
    'diffusion.noise_prior': noise_prior.NOISE_PRIORS,
    'sample.sampler': samplers.SAMPLERS,
    'sample.time_spacing': samplers.TIME_SPACINGS,
    'sample.task': tasks.TASKS,
    'eval.task': ('generate',) + tasks.TEST_CLIP_TASKS,
    'sample.conditioning_method': guidance.CONDITIONING_METHODS,
    'eval.split': ('train', 'test'),
    'classifier.pool': ('mean', 'max'),  # metrics.video_classifier.POOLS
}


# Tuple fields, which config_flags fills with whatever the command line gives ('abc' -> ('abc',)).
TUPLE_FIELDS = {
    'model.channel_mult': (int, '(1, 2, 2)'),
    'model.attention_resolutions': (int, '(8,)'),
    'diffusion.betas': ((int, float), '(0.0001, 0.02)'),
    'sample.prompts': (str, "('a red circle moving left',)"),
    'sample.cascade_workdirs': (str, "('runs/super_resolution',)"),
    'eval.metrics': (str, "('adherence', 'bpd')"),
    'eval.bpd_decoder_logsnrs': ((int, float), '(13.0, 10.0)'),
    'classifier.widths': (int, '(16, 32, 64)'),
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

  _require(config.model.attention_impl != 'cudnn' or config.model.dtype == 'bfloat16',
           f"config.model.attention_impl='cudnn' needs 16-bit inputs, not "
           f"config.model.dtype={config.model.dtype!r}: set --config.model.dtype=bfloat16, or "
           "--config.model.attention_impl=auto (cuDNN where it applies, XLA elsewhere).")
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
  _require(not config.data.image_dataset or images > 0,
           f'config.data.image_dataset={config.data.image_dataset!r} supplies images for joint '
           'training, but config.data.num_images_per_video=0 appends none: set it > 0, or '
           "--config.data.image_dataset=''.")
  # The tracker behind caption adherence reads moving_shapes captions only (data/tracker.py).
  _require(config.data.name == 'moving_shapes' or 'adherence' not in config.eval.metrics
           or not (config.train.eval_at_end or config.train.eval_every),
           f'caption-adherence evaluation reads moving_shapes captions only, not '
           f'config.data.name={config.data.name!r}: set --config.train.eval_at_end=False and '
           "--config.train.eval_every=0, or leave 'adherence' out of --config.eval.metrics.")
  _positive(config, ['model.layout_embedding_frequencies', 'model.layout_embedding_scale',
                     'model.layout_embedding_gate_sharpness', 'model.layout_head_scale'])
  _require(not (config.optim.trainable.strip() and config.diffusion.schedule == 'learned'),
           f'config.optim.trainable={config.optim.trainable!r} freezes part of the network, which '
           "the learned schedule's training does not support: set --config.optim.trainable='' or "
           'another --config.diffusion.schedule.')
  _positive(config, ['batch_size', 'data.max_text_length', 'model.channels', 'model.num_res_blocks',
                     'model.head_dim', 'model.text_width', 'model.text_layers', 'model.text_heads',
                     'optim.learning_rate', 'train.num_steps', 'train.log_every',
                     'train.checkpoint_every', 'train.keep_checkpoints', 'train.max_consecutive_skips',
                     'train.grad_accum_steps',
                     'sample.num_steps', 'sample.batch_size', 'sample.num_videos', 'sample.fps',
                     'eval.num_captions',
                     'diffusion.linear_num_steps', 'diffusion.min_snr_gamma'])
  _positive(config, ['optim.warmup_steps', 'optim.weight_decay', 'optim.grad_clip_norm',
                     'sample.guidance_weight', 'sample.eta', 'sample.gamma', 'model.dropout',
                     'model.cond_drop_prob', 'train.sample_every', 'train.eval_every',
                     'train.keep_checkpoints_every',
                     'optim.final_lr_fraction'],
            allow_zero=True)
  for field in ('optim.ema_decay', 'optim.b1', 'optim.b2', 'model.cond_drop_prob', 'model.dropout',
                'sample.gamma'):
    value = _get(config, field)
    _require(0 <= value < 1 or (field == 'sample.gamma' and value == 1),
             f'config.{field}={value!r} must lie in [0, 1): set --config.{field} accordingly.')
  # eta > 1 would ask DDIM for more fresh noise than sigma_s: no longer a valid step.
  _require(config.sample.eta <= 1,
           f'config.sample.eta={config.sample.eta!r} must lie in [0, 1] (1: the ancestral step): '
           'set --config.sample.eta accordingly.')
  _require(isinstance(config.sample.expert_step, int) and config.sample.expert_step >= 0,
           f'config.sample.expert_step={config.sample.expert_step!r} must be an integer >= 0 '
           '(0: the expert\'s latest checkpoint): set --config.sample.expert_step accordingly.')
  _require(not math.isnan(config.sample.expert_logsnr_below),
           'config.sample.expert_logsnr_below is NaN: set it to the log-SNR below which the '
           'expert denoises (e.g. -3.0).')
  _require(0 <= config.sample.dynamic_threshold <= 1,
           f'config.sample.dynamic_threshold={config.sample.dynamic_threshold!r} must lie in [0, 1] '
           '(0: off; e.g. 0.995): set --config.sample.dynamic_threshold accordingly.')
  _require(config.diffusion.logsnr_min < config.diffusion.logsnr_max,
           f'config.diffusion.logsnr_min={config.diffusion.logsnr_min} must be below '
           f'config.diffusion.logsnr_max={config.diffusion.logsnr_max}.')
  _require(0 < config.diffusion.linear_beta_start < config.diffusion.linear_beta_end < 1,
           'config.diffusion.linear_beta_start < linear_beta_end must lie in (0, 1).')
  d = config.diffusion
  _positive(config, ['diffusion.learned_num_features', 'eval.bpd_num_t', 'eval.num_repeats'])
  _positive(config, ['eval.bpd_num_videos', 'diffusion.logsnr_shift_base_resolution'],
            allow_zero=True)
  _require(d.logsnr_shift_base_resolution == 0 or d.logsnr_shift == 0.0,
           f'config.diffusion.logsnr_shift={d.logsnr_shift!r} and logsnr_shift_base_resolution='
           f'{d.logsnr_shift_base_resolution!r} both set a shift: set one of them to 0.')
  _require(d.logsnr_shift_base_resolution == 0 or d.schedule == 'cosine',
           f'config.diffusion.logsnr_shift_base_resolution shifts the cosine schedule, not '
           f'{d.schedule!r}: set --config.diffusion.schedule=cosine or leave it 0.')
  _require(d.schedule != 'betas' or (len(d.betas) >= 1 and all(0 < b < 1 for b in d.betas)),
           f"config.diffusion.betas={tuple(d.betas)!r} must be a non-empty tuple of values in (0, 1) "
           "for config.diffusion.schedule='betas'.")
  _require(d.schedule != 'learned' or not d.zero_terminal_snr,
           "config.diffusion.zero_terminal_snr=True does not apply to schedule 'learned' (its "
           'endpoints are logsnr_min and logsnr_max): set one of them differently.')
  _require(d.schedule != 'learned' or d.loss_weighting == 'vlb',
           f"config.diffusion.schedule='learned' needs config.diffusion.loss_weighting='vlb' (got "
           f'{d.loss_weighting!r}): only the VLB is unchanged by the schedule it trains.')
  _require(d.schedule != 'learned' or config.train.grad_accum_steps == 1,
           f"config.train.grad_accum_steps={config.train.grad_accum_steps} is not supported with "
           "config.diffusion.schedule='learned' (its VLB-variance gradient needs the whole batch "
           'at once): set --config.train.grad_accum_steps=1.')
  _require(d.train_time_logit_std > 0,
           f'config.diffusion.train_time_logit_std={d.train_time_logit_std!r} must be > 0: set '
           '--config.diffusion.train_time_logit_std accordingly.')
  _require(0 <= d.train_time_uniform_fraction <= 1,
           f'config.diffusion.train_time_uniform_fraction={d.train_time_uniform_fraction!r} must lie '
           'in [0, 1]: set --config.diffusion.train_time_uniform_fraction accordingly.')
  _require(config.model.layout_embedding_gate == 'none' or config.model.layout_embedding,
           f'config.model.layout_embedding_gate={config.model.layout_embedding_gate!r} gates the layout '
           'embedding, which is off: add --config.model.layout_embedding=True.')
  _require(not config.model.layout_embedding_detach or config.model.layout_embedding,
           'config.model.layout_embedding_detach=True detaches the layout embedding, which is off: '
           'add --config.model.layout_embedding=True.')
  _require(d.train_time_distribution == 'uniform' or d.loss_weighting != 'vlb',
           f"config.diffusion.train_time_distribution={d.train_time_distribution!r} reweights the loss "
           "by p(t), so it is no longer the VLB: use --config.diffusion.train_time_distribution=uniform "
           "with loss_weighting='vlb'.")
  if d.noise_prior != 'independent':
    correlated = f'config.diffusion.noise_prior={d.noise_prior!r}'
    _require(d.noise_prior_alpha > 0,
             f'config.diffusion.noise_prior_alpha={d.noise_prior_alpha!r} must be > 0 for {correlated}: '
             'set --config.diffusion.noise_prior_alpha (e.g. 1.0).')
    _require(d.loss_weighting != 'vlb',
             f"{correlated} is not supported with config.diffusion.loss_weighting='vlb' (the VLB as a "
             "loss, and the learned schedule, assume independent noise): use another loss_weighting, "
             'or --config.diffusion.noise_prior=independent.')
    _require(config.data.num_images_per_video == 0,
             f'{correlated} correlates the frames of a video, but config.data.num_images_per_video='
             f'{config.data.num_images_per_video} appends independent images as frames: set it to 0, '
             'or --config.diffusion.noise_prior=independent.')
    for field in ('sample.task', 'eval.task'):
      _require(_get(config, field) == 'generate',
               f"config.{field}={_get(config, field)!r} conditions by guidance (vdm_jax/guidance.py), "
               f'which assumes independent noise, but {correlated}: use --config.{field}=generate, or '
               'a model trained with --config.diffusion.noise_prior=independent.')
  _require(not d.learn_endpoints or d.schedule == 'learned',
           f"config.diffusion.learn_endpoints=True needs config.diffusion.schedule='learned' (got "
           f'{d.schedule!r}): set --config.diffusion.schedule=learned (with loss_weighting=vlb) '
           'or --config.diffusion.learn_endpoints=False.')

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

  if config.sample.cascade_workdirs:
    for field in ('sample.task', 'eval.task'):
      _require(_get(config, field) == 'generate',
               f'config.sample.cascade_workdirs runs super-resolution stages after generation, '
               f'not after config.{field}={_get(config, field)!r}: use --config.{field}=generate, '
               "or --config.sample.cascade_workdirs='()'.")
  frames, height, _, _ = video_shape(config)
  _validate_conditioning(config, frames, height)
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
  validate_task(config.sample, frames=frames, height=height)
  # A frame-conditioned model is given the task's frames it was trained on (tasks.py).
  tasks.check_frame_conditioned_task(config, config.sample.task, video_shape(config))
  if config.eval.task != 'generate':
    validate_task(config.sample, frames=frames, height=height, task=config.eval.task)
    tasks.check_frame_conditioned_task(config, config.eval.task, video_shape(config),
                                       field='eval.task')
  split_size = registry.split_size(config, config.eval.split)  # None: known once prepared.
  _require(split_size is None or config.eval.num_captions <= split_size,
           f'config.eval.num_captions={config.eval.num_captions} exceeds the {split_size} videos of '
           f'the {config.eval.split!r} split: lower --config.eval.num_captions.')
  _require(split_size is None or config.eval.bpd_num_videos <= split_size,
           f'config.eval.bpd_num_videos={config.eval.bpd_num_videos} exceeds the {split_size} videos '
           f'of the {config.eval.split!r} split: lower --config.eval.bpd_num_videos.')
  validate_eval_metrics(config.eval, split_size=split_size, dataset=config.data.name,
                        in_training=bool(config.train.eval_at_end or config.train.eval_every),
                        num_frames=frames)

  k = config.train.grad_accum_steps
  _require(config.batch_size % k == 0,
           f'config.batch_size={config.batch_size} does not split into '
           f'config.train.grad_accum_steps={k} microbatches: set --config.batch_size to a multiple '
           f'of {k}, or change --config.train.grad_accum_steps.')
  if num_devices is not None:
    validate_device_split(config, num_devices)
  else:
    validate_mesh(config.mesh)


def validate_device_split(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Every batch of the run splits evenly over `num_devices` (all processes): the training batch
  and its gradient-accumulation microbatches, the sampling batch, and config.mesh's shape."""
  k = config.train.grad_accum_steps
  _require(config.batch_size % num_devices == 0,
           f'config.batch_size={config.batch_size} is not divisible by the {num_devices} devices: '
           f'set --config.batch_size to a multiple of {num_devices}.')
  _require(config.batch_size % (k * num_devices) == 0,
           f'config.batch_size={config.batch_size} does not split into '
           f'config.train.grad_accum_steps={k} microbatches over {num_devices} devices: set '
           f'--config.batch_size to a multiple of {k * num_devices}, or lower '
           '--config.train.grad_accum_steps.')
  _require(config.sample.batch_size % num_devices == 0,
           f'config.sample.batch_size={config.sample.batch_size} is not divisible by the '
           f'{num_devices} devices: set --config.sample.batch_size to a multiple of {num_devices}.')
  validate_mesh(config.mesh, num_devices=num_devices)


def validate_mesh(mesh: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
  """`config.mesh`: ('data', 'fsdp') sizes that fit `num_devices` (when given)."""
  fsdp = mesh.fsdp
  _require(isinstance(fsdp, int) and fsdp >= 1,
           f'config.mesh.fsdp={fsdp!r} must be an integer >= 1: set --config.mesh.fsdp=1 '
           '(replicated parameters) or the number of devices to split them over.')
  _require(mesh.fsdp_min_mib >= 0, f'config.mesh.fsdp_min_mib={mesh.fsdp_min_mib!r} must be '
           '>= 0: set --config.mesh.fsdp_min_mib to a size in MiB (0: shard every array).')
  cpu_devices = mesh.get('cpu_devices', 0)
  _require(isinstance(cpu_devices, int) and cpu_devices >= 0,
           f'config.mesh.cpu_devices={cpu_devices!r} must be an integer >= 0: set '
           '--config.mesh.cpu_devices=0 (one CPU device per core) or a device count.')
  if num_devices is None:
    return
  _require(num_devices % fsdp == 0,
           f'config.mesh.fsdp={fsdp} does not divide the {num_devices} devices: set '
           f'--config.mesh.fsdp to a divisor of {num_devices}.')
  _require(mesh.data in (-1, num_devices // fsdp),
           f'config.mesh.data={mesh.data} times config.mesh.fsdp={fsdp} is not the {num_devices} '
           'devices: use --config.mesh.data=-1 (the rest).')


def validate_task(sample: ml_collections.ConfigDict, *, frames: int, height: int,
                  task: str | None = None) -> None:
  """The fields of `task` (default `config.sample.task`; vdm_jax/tasks.py) for videos of `frames`
  x `height`^2."""
  task = sample.task if task is None else task
  _require(sample.reconstruction_weight >= 0,
           f'config.sample.reconstruction_weight={sample.reconstruction_weight!r} must be >= 0: set '
           '--config.sample.reconstruction_weight (e.g. 5; 0: the observation imposed only).')
  _require(sample.num_clips > 0, f'config.sample.num_clips={sample.num_clips!r} must be > 0: set '
           '--config.sample.num_clips to the number of test clips to condition on.')
  if task in ('predict', 'extend'):
    _require(1 <= sample.num_known_frames < frames,
             f'config.sample.num_known_frames={sample.num_known_frames!r} must lie in [1, {frames}) '
             f'for task {task!r} on {frames}-frame clips: set --config.sample.num_known_frames.')
  if task == 'extend':
    _require(sample.extend_frames >= frames,
             f'config.sample.extend_frames={sample.extend_frames!r} is shorter than the model\'s '
             f'{frames} frames: set --config.sample.extend_frames >= {frames}.')
  if task == 'interpolate':
    _require(frames >= 2, f'task \'interpolate\' needs clips of at least 2 frames, not {frames}.')
  if task == 'super_resolve':
    f = sample.super_resolution_factor
    _require(isinstance(f, int) and f > 1 and height % f == 0,
             f'config.sample.super_resolution_factor={f!r} must be an integer > 1 dividing the '
             f'resolution {height}: set --config.sample.super_resolution_factor (e.g. 2).')
  if task == 'inpaint':
    _require(0 < sample.inpaint_fraction < 1,
             f'config.sample.inpaint_fraction={sample.inpaint_fraction!r} must lie in (0, 1): set '
             '--config.sample.inpaint_fraction (e.g. 0.5).')


def _validate_conditioning(config: ml_collections.ConfigDict, frames: int, height: int) -> None:
  """config.model.conditioning, text_encoder, the conditioning embedding and frame conditioning."""
  model = config.model
  _positive(config, ['model.cond_mlp_layers'])
  _positive(config, ['model.cond_embedding_dim'], allow_zero=True)
  if model.conditioning == 'class':
    _require(model.num_classes > 0, f'config.model.num_classes={model.num_classes} must be > 0 for '
             "config.model.conditioning='class': set it to the dataset's number of classes.")
    if config.data.name == 'moving_shapes':
      from vdm_jax.data import registry  # pylint: disable=g-import-not-at-top
      _require(registry._built_in_config(config.data).num_objects == 1,  # pylint: disable=protected-access
               f'config.data.builder_config={config.data.builder_config!r} has two objects per '
               "video, which have no single class: use conditioning 'text', or a one-object config.")
    from vdm_jax import conditioning  # pylint: disable=g-import-not-at-top
    names = conditioning.class_names(config)
    _require(names is None or model.num_classes == len(names),
             f'config.model.num_classes={model.num_classes} but {config.data.name} has '
             f'{len(names or ())} classes: set --config.model.num_classes={len(names or ())}.')
  if model.conditioning == 'text' and model.text_encoder == 'precomputed':
    _require(model.text_embedding_dim > 0,
             f'config.model.text_embedding_dim={model.text_embedding_dim} must be > 0 for '
             "config.model.text_encoder='precomputed': set it to the width D of the dataset's "
             'text embeddings.')
  if not model.frame_conditioning:
    return
  t = config.train
  if t.cond_frames == 'low_res':
    f = t.cond_low_res_factor
    _require(isinstance(f, int) and f > 1 and height % f == 0,
             f'config.train.cond_low_res_factor={f!r} must be an integer > 1 dividing the '
             f'resolution {height}: set --config.train.cond_low_res_factor (e.g. 2).')
  elif t.cond_frames == 'low_frame_rate':
    s = t.cond_frame_stride
    _require(isinstance(s, int) and s > 1 and frames % s == 0,
             f'config.train.cond_frame_stride={s!r} must be an integer > 1 dividing the '
             f'{frames} frames: set --config.train.cond_frame_stride (e.g. 2).')
  else:
    _require(1 <= t.num_cond_frames < frames,
             f'config.train.num_cond_frames={t.num_cond_frames} must lie in [1, {frames}) (the '
             f'clip has {frames} frames): set --config.train.num_cond_frames accordingly.')
  _require(0 <= t.cond_drop_prob < 1,
           f'config.train.cond_drop_prob={t.cond_drop_prob!r} must lie in [0, 1): set '
           '--config.train.cond_drop_prob (e.g. 0.25; 0: frames always given).')
  _require(t.cond_drop_prob == 0 or t.cond_frames in ('first', 'random'),
           f'config.train.cond_drop_prob={t.cond_drop_prob} applies to train.cond_frames \'first\' '
           f'or \'random\', not {t.cond_frames!r} (a super-resolution stage is always given its '
           'input): set --config.train.cond_drop_prob=0.')
  _require(t.cond_aug_logsnr_min <= t.cond_aug_logsnr_max,
           f'config.train.cond_aug_logsnr_min={t.cond_aug_logsnr_min} exceeds '
           f'config.train.cond_aug_logsnr_max={t.cond_aug_logsnr_max}: swap them.')
  evaluates = config.train.eval_at_end or config.train.eval_every
  _require(not (evaluates and config.eval.bpd_num_videos),
           'bits/dim of frame-conditioned models (config.model.frame_conditioning=True) is not '
           'implemented: set --config.eval.bpd_num_videos=0.')


def check_prompts(prompts: Iterable[str], *, max_text_length: int,
                  text_tokenizer: str = 'bytes') -> None:
  """Raises `UserError` for a `--prompt` that is empty, not UTF-8, or longer than the model reads
  (the tokenizer would silently cut it)."""
  for number, prompt in enumerate(prompts, 1):
    try:
      prompt.encode('utf-8')
    except UnicodeEncodeError:
      # The shell passed bytes that are not UTF-8; Python keeps them as lone surrogates.
      raw = prompt.encode('utf-8', 'surrogateescape')
      raise UserError(f'--prompt {raw!r} (prompt {number}) is not valid UTF-8: pass it in UTF-8 '
                      '(check the terminal\'s encoding).') from None
    _require(prompt.strip() != '',
             f'--prompt {prompt!r} (prompt {number}) is empty: give a caption, e.g. --prompt '
             '"a red circle moving left", or leave --prompt out to use config.sample.prompts.')
    shown = prompt if len(prompt) <= 40 else prompt[:40] + '...'
    size = tokenizer.num_tokens(prompt, text_tokenizer)
    unit = 'bytes' if text_tokenizer == 'bytes' else 'words'
    _require(size <= max_text_length,
             f'--prompt {shown!r} (prompt {number}) is {size} {unit} long, over the model\'s '
             f'config.data.max_text_length={max_text_length} (it would be cut): shorten it (the '
             'limit is fixed by the checkpoint\'s model).')


def validate_eval_metrics(eval_config: ml_collections.ConfigDict, *, split_size: int | None,
                          dataset: str, in_training: bool = True,
                          num_frames: int | None = None) -> None:
  """`config.eval.metrics` and the fields its metrics need (`split_size`: videos of eval.split,
  None when not yet known; `dataset`: config.data.name; `in_training`: training evaluates, so
  the I3D, Inception and C3D weights must be given now; else `--mode eval` refuses a missing file
  when it starts; `num_frames`: frames per video, None when not known)."""
  for name in eval_config.metrics:
    _require(name in metrics_lib.METRICS,
             f'config.eval.metrics contains {name!r}, which is not a metric: use any of '
             f'{", ".join(map(repr, metrics_lib.METRICS))}.')
  if 'digit_accuracy' in eval_config.metrics:
    _require(dataset == 'moving_digits',
             f"config.eval.metrics has 'digit_accuracy', which reads moving_digits captions, but "
             f'config.data.name={dataset!r}: drop it from --config.eval.metrics (moving_shapes: '
             "'adherence').")
    _require(eval_config.classifier_workdir,
             "config.eval.metrics has 'digit_accuracy' but config.eval.classifier_workdir is empty: "
             'set it to the workdir of python -m vdm_jax.metrics.train_classifier --config '
             'experiments/digit_classifier.py.')
  if {'fvd_learned', 'fvd_i3d', 'fid_frames', 'fid_c3d'} & set(eval_config.metrics):
    n = eval_config.fvd_num_reference
    _require(n >= 2 and (split_size is None or n <= split_size),
             f'config.eval.fvd_num_reference={n} must lie in [2, {split_size or "split size"}] '
             f'(videos of the {eval_config.split!r} split): set --config.eval.fvd_num_reference '
             'accordingly.')
  _validate_frame_metrics(eval_config, in_training=in_training, num_frames=num_frames)
  _validate_c3d_metrics(eval_config, in_training=in_training, num_frames=num_frames)
  if not {'fvd_learned', 'fvd_i3d'} & set(eval_config.metrics):
    return
  _require(eval_config.num_captions >= 2,
           f'config.eval.num_captions={eval_config.num_captions} generated videos are too few for an '
           'FVD (a covariance needs 2): raise --config.eval.num_captions.')
  _require('fvd_learned' not in eval_config.metrics or eval_config.classifier_workdir,
           "config.eval.metrics has 'fvd_learned' but config.eval.classifier_workdir is empty: set it "
           'to the workdir of python -m vdm_jax.metrics.train_classifier.')
  _require('fvd_i3d' not in eval_config.metrics or eval_config.i3d_weights or not in_training,
           "config.eval.metrics has 'fvd_i3d' but config.eval.i3d_weights is empty: set it to the "
           '.npz of python -m vdm_jax.metrics.convert_i3d.')


def _validate_frame_metrics(eval_config: ml_collections.ConfigDict, *, in_training: bool,
                            num_frames: int | None) -> None:
  """'fid_frames' and 'is_frames' (vdm_jax/metrics/inception.py): frames per video, splits, the
  frame counts they need and the Inception weights."""
  if not _requested(eval_config, metrics_lib.FRAME_METRICS, weights='inception_weights',
                    converter='convert_inception', in_training=in_training):
    return
  f = eval_config.frames_per_video
  _require(isinstance(f, int) and not isinstance(f, bool) and 0 <= f <= (num_frames or f),
           f'config.eval.frames_per_video={f!r} must be an integer in [0, '
           f'{num_frames or "frames per video"}] (0: every frame): set '
           '--config.eval.frames_per_video accordingly.')
  frames = eval_config.num_captions * (f or num_frames or 1)  # generated frames (a lower bound)
  _validate_fid_and_is(eval_config, metrics_lib.FRAME_METRICS, count=frames, unit='frame')


def _validate_c3d_metrics(eval_config: ml_collections.ConfigDict, *, in_training: bool,
                          num_frames: int | None) -> None:
  """'fid_c3d' and 'is_c3d' (vdm_jax/metrics/c3d.py): 16-frame videos, the counts they need and
  the C3D weights."""
  names = _requested(eval_config, metrics_lib.C3D_METRICS, weights='c3d_weights',
                     converter='convert_c3d', in_training=in_training)
  if not names:
    return
  clip = c3d.NUM_FRAMES
  _require(num_frames in (None, clip),
           f'config.eval.metrics has {names}, whose C3D reads {clip}-frame clips, but the videos '
           f'have {num_frames} frames: set --config.data.num_frames={clip}, or drop {names} from '
           '--config.eval.metrics.')
  _validate_fid_and_is(eval_config, metrics_lib.C3D_METRICS, count=eval_config.num_captions,
                       unit='video')


def _requested(eval_config: ml_collections.ConfigDict, names: tuple[str, ...], *, weights: str,
               converter: str, in_training: bool) -> str:
  """The metrics of `names` that config.eval.metrics asks for, quoted and joined ("'fid_c3d' and
  'is_c3d'"; '' for none), once config.eval.<weights> is checked: set when training evaluates
  (python -m vdm_jax.metrics.<converter> writes it)."""
  asked = ' and '.join(repr(m) for m in names if m in eval_config.metrics)
  _require(not asked or eval_config[weights] or not in_training,
           f'config.eval.metrics has {asked} but config.eval.{weights} is empty: set '
           f'--config.eval.{weights} to the .npz of python -m vdm_jax.metrics.{converter}.')
  return asked


def _validate_fid_and_is(eval_config: ml_collections.ConfigDict, names: tuple[str, str], *,
                         count: int, unit: str) -> None:
  """`count` generated items ('frame' or 'video' `unit`s, of config.eval.num_captions videos)
  are enough for the FID of names[0] (2: a covariance) and for config.eval.is_splits splits of the
  IS of names[1]."""
  fid, score = names
  metrics = set(eval_config.metrics)
  _require(fid not in metrics or count >= 2,
           f'config.eval.num_captions={eval_config.num_captions} generated videos give {count} '
           f'{unit}(s), too few for an FID (a covariance needs 2): raise '
           '--config.eval.num_captions.')
  if score in metrics:
    k = eval_config.is_splits
    _require(isinstance(k, int) and not isinstance(k, bool) and 0 < k <= count,
             f'config.eval.is_splits={k!r} must be an integer in [1, {count}] (the {unit}s of '
             'config.eval.num_captions generated videos): set --config.eval.is_splits '
             'accordingly.')


def validate_classifier(config: ml_collections.ConfigDict) -> None:
  """`config.classifier` and the data it trains on (single-object moving_shapes, or
  moving_digits)."""
  _positive(config, ['classifier.feature_dim', 'classifier.batch_size', 'classifier.num_steps',
                     'classifier.learning_rate', 'classifier.log_every', 'classifier.eval_videos'])
  _require(len(config.classifier.widths) >= 1 and all(w > 0 for w in config.classifier.widths),
           f'config.classifier.widths={tuple(config.classifier.widths)} must be a non-empty tuple of '
           'positive ints.')
  _require(config.data.name == 'moving_digits' or (
      config.data.name == 'moving_shapes' and config.data.builder_config != 'two_objects'),
           f'the caption classifier learns single-object moving_shapes captions or moving_digits '
           f'captions, not config.data.name={config.data.name!r} with builder_config '
           f"{config.data.builder_config!r}: use --config.data.name=moving_shapes with "
           "--config.data.builder_config 'default', 'res64' or 'smoke', or moving_digits.")
  from vdm_jax.data import registry  # pylint: disable=g-import-not-at-top
  test_size = registry.split_size(config, 'test')
  _require(test_size is None or config.classifier.eval_videos <= test_size,
           f'config.classifier.eval_videos={config.classifier.eval_videos} exceeds the {test_size} '
           'test videos: lower --config.classifier.eval_videos.')
