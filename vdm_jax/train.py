"""Training: one jitted, data-parallel train step, checkpoints, samples and evaluation.

`train_and_evaluate(config, workdir)` is the whole job behind `launch.py --mode train`; it resumes
from the latest checkpoint in `workdir` when there is one.
"""

import dataclasses
import json
import os
import signal
import threading
from typing import Any, Callable

import flax
import flax.linen
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from vdm_jax import checkpoints
from vdm_jax import conditioning
from vdm_jax import config_validation
from vdm_jax import diffusion
from vdm_jax import experts
from vdm_jax import frame_conditioning
from vdm_jax import grad_accumulation
from vdm_jax import host_memory
from vdm_jax import likelihood
from vdm_jax import mesh as mesh_lib
from vdm_jax import noise_prior as noise_prior_lib
from vdm_jax import progress
from vdm_jax import sample as sample_lib
from vdm_jax import schedules
from vdm_jax import xla_options
from vdm_jax.data import image_dataset
from vdm_jax.data import pipeline
from vdm_jax.data import registry
from vdm_jax.data import tokenizer
from vdm_jax.errors import UserError
from vdm_jax.models import unet

# ============================================================================ state


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (the data-iterator state is checkpointed beside it)."""
  step: jax.Array  # int32 scalar: number of train steps taken (applied or skipped).
  params: Any
  ema_params: Any  # Exponential moving average of params; used for sampling and evaluation.
  opt_state: Any
  # int32 scalars: steps whose loss or gradients were not finite, so that params, EMA and
  # optimizer state were left as they were; the run stops after config.train.max_consecutive_skips.
  consecutive_skips: jax.Array
  total_skips: jax.Array


class LearnedScheduleTrainState(TrainState):
  """The TrainState of a run with the learned schedule (Kingma et al. 2021): also the schedule's
  parameters and their optimizer state. A separate class so that runs with a fixed schedule keep
  the state (and checkpoint) layout they always had.

  The schedule has no EMA: the network is conditioned on lambda, not on t, so the EMA network
  works with any schedule, and sampling and evaluation use the latest one (the lambda grid the
  model was trained on last).
  """
  schedule_params: Any
  schedule_opt_state: Any


# ============================================================================ builders


def create_model(config: ml_collections.ConfigDict) -> unet.VideoUNet:
  model_config = config.model
  return unet.VideoUNet(
      channels=model_config.channels,
      channel_mult=tuple(model_config.channel_mult),
      num_res_blocks=model_config.num_res_blocks,
      attention_resolutions=tuple(model_config.attention_resolutions),
      head_dim=model_config.head_dim,
      dropout=model_config.dropout,
      text_width=model_config.text_width,
      text_layers=model_config.text_layers,
      text_heads=model_config.text_heads,
      max_text_length=config.data.max_text_length,
      text_vocab_size=tokenizer.vocab_size(model_config.text_tokenizer),
      temporal_rel_pos_buckets=model_config.temporal_rel_pos_buckets,
      temporal_rel_pos_max_distance=model_config.temporal_rel_pos_max_distance,
      patch_size=model_config.patch_size,
      temporal_conv=model_config.temporal_conv,
      frame_embedding=model_config.frame_embedding,
      coord_channels=model_config.coord_channels,
      layout_embedding=model_config.layout_embedding,
      layout_embedding_gate=model_config.layout_embedding_gate,
      layout_embedding_gate_center=model_config.layout_embedding_gate_center,
      layout_embedding_gate_sharpness=model_config.layout_embedding_gate_sharpness,
      layout_embedding_detach=model_config.layout_embedding_detach,
      layout_embedding_frequencies=model_config.layout_embedding_frequencies,
      layout_embedding_scale=model_config.layout_embedding_scale,
      layout_head=model_config.layout_head,
      layout_head_scale=model_config.layout_head_scale,
      parameterization=config.diffusion.parameterization,
      conv_impl=model_config.conv_impl,
      attention_impl=model_config.attention_impl,
      remat=model_config.remat,
      conditioning=model_config.conditioning,
      num_classes=model_config.num_classes,
      text_encoder=model_config.text_encoder,
      cond_embedding_dim=model_config.cond_embedding_dim,
      cond_mlp_layers=model_config.cond_mlp_layers,
      frame_conditioning=model_config.frame_conditioning,
      dtype=jnp.dtype(model_config.dtype),
      param_dtype=jnp.dtype(model_config.param_dtype))


def logsnr_shift(config: ml_collections.ConfigDict) -> float:
  """The cosine schedule's shift: config.diffusion.logsnr_shift, or, with
  logsnr_shift_base_resolution = b > 0, 2 log(b / config.data.resolution) (Hoogeboom et al. 2023)."""
  base = config.diffusion.get('logsnr_shift_base_resolution', 0)
  if base > 0:
    return schedules.resolution_shift(base_resolution=base, resolution=config.data.resolution)
  return config.diffusion.logsnr_shift


def create_schedule(config: ml_collections.ConfigDict) -> flax.linen.Module:
  """The schedule module of `config.diffusion` (see schedules.make_schedule)."""
  d = config.diffusion
  kwargs = {
      'cosine': lambda: dict(logsnr_min=d.logsnr_min, logsnr_max=d.logsnr_max,
                             logsnr_shift=logsnr_shift(config), zero_terminal_snr=d.zero_terminal_snr),
      'linear': lambda: dict(num_steps=d.linear_num_steps, beta_start=d.linear_beta_start,
                             beta_end=d.linear_beta_end, zero_terminal_snr=d.zero_terminal_snr),
      'betas': lambda: dict(betas=tuple(float(b) for b in d.betas),
                            zero_terminal_snr=d.zero_terminal_snr),
      'learned': lambda: dict(logsnr_min=d.logsnr_min, logsnr_max=d.logsnr_max,
                              num_features=d.learned_num_features,
                              learn_endpoints=d.learn_endpoints),
  }[d.schedule]()
  return schedules.make_schedule(d.schedule, **kwargs)


def init_schedule_params(config: ml_collections.ConfigDict, rng: jax.Array) -> Any:
  """Initial parameters of the learned schedule; None for the fixed ones."""
  if config.diffusion.schedule != 'learned':
    return None
  return create_schedule(config).init(rng, jnp.zeros((1,), jnp.float32))['params']


def create_logsnr_fn(config: ml_collections.ConfigDict,
                     schedule_params: Any = None) -> Callable[[jax.Array], jax.Array]:
  """t in [0, 1] -> log-SNR lambda(t), from `config.diffusion` (and the learned schedule's params)."""
  schedule = create_schedule(config)
  if (schedule_params is None) != (config.diffusion.schedule != 'learned'):
    raise ValueError('schedule_params are needed by the learned schedule, and only by it.')
  variables = {} if schedule_params is None else {'params': schedule_params}
  return lambda t: schedule.apply(variables, t)


def create_optimizer(config: ml_collections.ConfigDict, *, weight_decay: float | None = None,
                     ) -> tuple[optax.GradientTransformation, Callable]:
  """AdamW with linear warm-up, then constant or cosine decay, after global-norm clipping.

  weight_decay: instead of config.optim.weight_decay (the optimizer state has the same layout).
  """
  o = config.optim
  weight_decay = o.weight_decay if weight_decay is None else weight_decay
  if o.lr_schedule == 'cosine':
    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0, o.learning_rate, o.warmup_steps, max(config.train.num_steps, o.warmup_steps + 1),
        end_value=o.learning_rate * o.final_lr_fraction)
  elif o.warmup_steps > 0:
    learning_rate = optax.warmup_constant_schedule(0.0, o.learning_rate, o.warmup_steps)
  else:  # (optax's warm-up over 0 steps holds the initial value, 0, forever)
    learning_rate = optax.constant_schedule(o.learning_rate)
  chain = [optax.clip_by_global_norm(o.grad_clip_norm)] if o.grad_clip_norm > 0 else []
  chain.append(optax.adamw(learning_rate, b1=o.b1, b2=o.b2, weight_decay=weight_decay))
  tx = optax.chain(*chain)
  trainable = trainable_names(config)
  if trainable:  # The other top-level parameters get zero updates (and no optimizer state).
    labels = lambda params: {k: jax.tree.map(lambda _: 'train' if k in trainable else 'frozen', v)
                             for k, v in params.items()}
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
  return tx, learning_rate


def trainable_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """config.optim.trainable as a tuple of top-level parameter names (empty: train them all)."""
  return tuple(name.strip() for name in config.optim.trainable.split(',') if name.strip())


def check_trainable(config: ml_collections.ConfigDict, params: Any) -> None:
  unknown = sorted(set(trainable_names(config)) - set(params))
  if unknown:
    raise UserError(f'config.optim.trainable names {", ".join(unknown)}, which the model does not '
                    f'have: use top-level parameter names among {", ".join(sorted(params))}.')


def _dummy_inputs(model, config, video_shape, batch: int = 1):
  return (jnp.zeros((batch, *video_shape), jnp.float32),
          dict(logsnr=jnp.zeros((batch,), jnp.float32),
               **conditioning.dummy_inputs(config, model, batch_size=batch,
                                           video_shape=video_shape)))


def init_params(model, config, video_shape, rng):
  z, kwargs = _dummy_inputs(model, config, video_shape)
  return model.init(rng, z, **kwargs)['params']


def frame_conditioning_inputs(config: ml_collections.ConfigDict, video: jax.Array,
                              rng: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
  """The training-time frame conditioning of a batch: ({'cond_frames', 'cond_mask',
  'cond_logsnr'}, loss frame weights [B, T]).

  Given frames: config.train.cond_frames of the video's frames (appended images never), with
  'low_res' every frame, average-pooled by config.train.cond_low_res_factor and upsampled back,
  with 'low_frame_rate' frames 0, s, 2s, ... (s = config.train.cond_frame_stride); with 'first'
  and 'random', none at all for a config.train.cond_drop_prob share of the batch;
  noise conditioning augmentation at lambda' ~ U[config.train.cond_aug_logsnr_min, _max]
  (frame_conditioning.augment); the loss covers the frames not given (with 'low_res': all)."""
  B, T = video.shape[:2]
  mask_rng, logsnr_rng, noise_rng = jax.random.split(rng, 3)
  t = config.train
  cond_logsnr = frame_conditioning.sample_aug_logsnr(
      logsnr_rng, B, logsnr_min=t.cond_aug_logsnr_min, logsnr_max=t.cond_aug_logsnr_max)
  noise = jax.random.normal(noise_rng, video.shape, video.dtype)
  if t.cond_frames == 'low_res':
    f = t.cond_low_res_factor
    given = frame_conditioning.low_res_input(frame_conditioning.low_res(video, factor=f), factor=f)
    mask = jnp.ones((B, T), bool)
    weights = jnp.ones((B, T), jnp.float32)
  elif t.cond_frames == 'low_frame_rate':  # Of the video's frames; appended images never given.
    given = video
    num_images = config.data.num_images_per_video
    mask = jnp.concatenate([frame_conditioning.low_frame_rate_mask(T - num_images,
                                                                   stride=t.cond_frame_stride),
                            jnp.zeros((num_images,), bool)])
    mask = jnp.broadcast_to(mask, (B, T))
    weights = frame_conditioning.loss_frame_weights(mask)
  else:
    given = video
    mask = frame_conditioning.given_frames_mask(
        mask_rng, batch_size=B, num_frames=T, num_given=t.num_cond_frames, mode=t.cond_frames,
        num_images=config.data.num_images_per_video)
    mask = frame_conditioning.drop_given_frames(jax.random.fold_in(mask_rng, 1), mask,
                                                drop_prob=t.cond_drop_prob)
    weights = frame_conditioning.loss_frame_weights(mask)
  cond_frames = frame_conditioning.augment(given, mask=mask, logsnr=cond_logsnr, noise=noise)
  return dict(cond_frames=cond_frames, cond_mask=mask, cond_logsnr=cond_logsnr), weights


def create_train_state(model, tx, config, video_shape, rng) -> TrainState:
  params = init_params(model, config, video_shape, rng)
  fields = dict(step=jnp.zeros((), jnp.int32), params=params,
                ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params),
                consecutive_skips=jnp.zeros((), jnp.int32), total_skips=jnp.zeros((), jnp.int32))
  schedule_params = init_schedule_params(config, jax.random.fold_in(rng, 1))
  if schedule_params is None:
    return TrainState(**fields)
  return LearnedScheduleTrainState(**fields, schedule_params=schedule_params,
                                   schedule_opt_state=tx.init(schedule_params))


def load_dataset_builder(config: ml_collections.ConfigDict):
  """The prepared TFDS builder of `config.data`; prepared on first use by process 0 only.

  Other processes wait, then open it (or prepare their own copy when the data directory is not
  shared), so concurrent processes never write the same files.
  """
  load = lambda: registry.load_builder(config)  # Built-in or TFDS dataset: vdm_jax/data/registry.py.
  if jax.process_count() == 1:
    return load()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  builder = load() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices('vdm_jax: dataset prepared')
  return builder or load()


# ============================================================================ train step


def make_train_step(model, *, logsnr_fn, tx, config, mesh, state_sharding=None) -> Callable:
  """Returns the jitted `train_step(state, batch) -> (state, metrics)`.

  batch: {'video': float32 [batch, frames, height, width, 3] in [-1, 1], 'tokens': int32 [batch, L]},
  global arrays sharded along the batch axis. The state is donated, and laid out by
  `state_sharding` (train_state_sharding's; default: replicated) in and out. With
  config.train.grad_accum_steps = k > 1 the gradient is averaged over k microbatches inside the
  step (grad_accumulation.py): the same update, about 1/k of the activation memory.

  With the learned schedule, `logsnr_fn` is unused: the schedule is the state's, and its
  parameters get the gradient of the VLB estimate's second moment
  (diffusion.grads_with_learned_schedule), the network that of its loss. With
  config.diffusion.learn_endpoints its endpoints get the gradient of the whole VLB estimate (the
  diffusion term plus likelihood.endpoint_terms with the 8-bit decoder), without weight decay.
  """
  base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  ema_decay = config.optim.ema_decay
  cond_drop_prob = config.model.cond_drop_prob
  parameterization = config.diffusion.parameterization
  loss_weighting = diffusion.target_loss_weight_fn(
      config.diffusion.loss_weighting, parameterization=parameterization,
      min_snr_gamma=config.diffusion.min_snr_gamma)
  antithetic_time = config.diffusion.antithetic_time_sampling
  # Joint image-video training: the last K frames of each batch video are independent images
  # (pipeline.WithAppendedImages); the loss averages over all T + K frames, images included.
  num_images = config.data.num_images_per_video
  learned_schedule = config.diffusion.schedule == 'learned'
  learn_endpoints = learned_schedule and config.diffusion.learn_endpoints
  schedule = create_schedule(config)
  # Weight decay would pull the endpoints towards log-SNR 0 whatever the VLB says (same state layout).
  schedule_tx = create_optimizer(config, weight_decay=0.0)[0] if learn_endpoints else tx
  frame_conditioned = config.model.frame_conditioning
  layout_head = config.model.layout_head  # Its own loss term (diffusion.denoising_terms).
  trainable = trainable_names(config)
  # Gradient accumulation: the batch's gradient a microbatch at a time (less activation memory).
  grad_accum_steps = config.train.grad_accum_steps

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(base_key, state.step)
    drop_rng, diffusion_rng, dropout_rng = jax.random.split(rng, 3)
    batch_size = batch['video'].shape[0]
    # Classifier-free guidance training: replace the text (the class) by the null embedding
    # at random ('none': nothing to drop; the model ignores drop_text).
    drop_text = jax.random.bernoulli(drop_rng, cond_drop_prob, (batch_size,))
    cond = conditioning.batch_inputs(model, batch)
    frame_weights = None
    if frame_conditioned:  # fold_in: the other keys stay those of runs without it.
      frame_cond, frame_weights = frame_conditioning_inputs(config, batch['video'],
                                                            jax.random.fold_in(rng, 3))
      cond.update(frame_cond)

    # Only a U-Net with the head takes layout_head_parts (stand-in models need not).
    head_kw = {'layout_head_parts': True} if layout_head else {}

    def network_of(params, cond=cond, drop_text=drop_text, dropout_rng=dropout_rng):
      def network(z, logsnr):
        return model.apply({'params': params}, z, logsnr=logsnr, **cond,
                           drop_text=drop_text, train=True, num_images=num_images,
                           rngs={'dropout': dropout_rng}, **head_kw)
      return network

    def loss_fn(params, examples, dropout_rng):
      """Batch-mean loss and metrics of `examples` (per-example arrays; a microbatch of them
      under gradient accumulation)."""
      if trainable:  # Frozen parameters: no backward pass through what only they need.
        params = {k: v if k in trainable else jax.lax.stop_gradient(v) for k, v in params.items()}
      network = network_of(params, examples['cond'], examples['drop_text'], dropout_rng)
      return diffusion.batch_loss_and_metrics(*diffusion.per_example_loss_at(
          network, examples['video'], t=examples['t'], noise=examples['noise'],
          logsnr_fn=logsnr_fn, parameterization=parameterization, loss_weighting=loss_weighting,
          frame_weights=examples['frame_weights']))

    def per_example_fn(params, schedule_params):
      """((loss [B], VLB diffusion term [B]), metrics) under the learned schedule."""
      loss, terms = diffusion.per_example_loss(
          network_of(params), batch['video'], rng=diffusion_rng,
          logsnr_fn=lambda t: schedule.apply({'params': schedule_params}, t),
          parameterization=parameterization, loss_weighting=loss_weighting,
          antithetic_time=antithetic_time, frame_weights=frame_weights)
      vlb = diffusion.vlb_diffusion_term(mse_x=terms['mse_x'], logsnr=terms['logsnr'],
                                         dlogsnr_dt=terms['dlogsnr_dt'])
      return (loss, vlb), {'mse_eps': jnp.mean(terms['mse_eps']),
                           'mse_x': jnp.mean(terms['mse_x_clipped']),
                           'vlb_second_moment': jnp.mean(jnp.square(vlb))}

    def endpoint_terms_fn(schedule_params):
      """Batch mean of the VLB's prior and reconstruction terms (nats per dimension) under the
      learned endpoints; the discrete decoder, as the 8-bit data and --mode eval's bits/dim."""
      logsnr_0, logsnr_1 = schedule.apply({'params': schedule_params}, jnp.array([0.0, 1.0]))
      video = batch['video']
      noise = jax.random.normal(jax.random.fold_in(rng, 4), video.shape, video.dtype)
      return jnp.mean(likelihood.endpoint_terms(video, logsnr_0=logsnr_0, logsnr_1=logsnr_1,
                                                noise=noise, decoder='discrete',
                                                frame_weights=frame_weights))

    extra = {}
    if learned_schedule:
      loss, aux, grads, schedule_grads = diffusion.grads_with_learned_schedule(
          per_example_fn, state.params, state.schedule_params,
          endpoint_terms_fn=endpoint_terms_fn if learn_endpoints else None)
      if learn_endpoints:  # Monitoring: the VLB estimate and the endpoints of this step.
        aux['vlb'] = loss + endpoint_terms_fn(state.schedule_params)
        aux['logsnr_0'], aux['logsnr_1'] = schedule.apply(
            {'params': state.schedule_params}, jnp.array([0.0, 1.0]))
      schedule_updates, schedule_opt_state = schedule_tx.update(
          schedule_grads, state.schedule_opt_state, state.schedule_params)
      extra = dict(schedule_params=optax.apply_updates(state.schedule_params, schedule_updates),
                   schedule_opt_state=schedule_opt_state)
      aux['schedule_grad_norm'] = optax.global_norm(schedule_grads)
    else:
      # t and noise are drawn for the whole batch (the same draws whatever grad_accum_steps).
      t, noise = diffusion.draw_time_and_noise(
          diffusion_rng, batch['video'], antithetic=antithetic_time,
          distribution=config.diffusion.train_time_distribution,
          logit_mean=config.diffusion.train_time_logit_mean,
          logit_std=config.diffusion.train_time_logit_std,
          uniform_fraction=config.diffusion.train_time_uniform_fraction,
          noise_prior=noise_prior_lib.NoisePrior.from_config(config))
      examples = dict(video=batch['video'], t=t, noise=noise, cond=cond, drop_text=drop_text,
                      frame_weights=frame_weights)
      (loss, aux), grads = grad_accumulation.value_and_grad_accumulated(
          loss_fn, state.params, examples, num_microbatches=grad_accum_steps, rng=dropout_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    if trainable:  # Frozen parameters keep their EMA bit for bit (the update would round it).
      ema_params = {k: v if k in trainable else state.ema_params[k] for k, v in ema_params.items()}
    grad_norm = optax.global_norm(grads)
    metrics = {'train/loss': loss, 'train/grad_norm': grad_norm}
    metrics.update({f'train/{k}': v for k, v in aux.items() if k != 'loss'})
    # A non-finite loss or gradient (the norm is non-finite if any entry is) skips the update:
    # params, EMA and optimizer state stay as they were; the step (hence the RNG) moves on.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if learned_schedule:
      finite &= jnp.isfinite(aux['schedule_grad_norm'])
    updated = dict(params=params, ema_params=ema_params, opt_state=opt_state, **extra)
    kept = {k: getattr(state, k) for k in updated}
    updated = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
    consecutive_skips = jnp.where(finite, 0, state.consecutive_skips + 1)
    new_state = state.replace(step=state.step + 1, consecutive_skips=consecutive_skips,
                              total_skips=state.total_skips + (~finite).astype(jnp.int32),
                              **updated)
    metrics['train/consecutive_skips'] = consecutive_skips
    metrics['train/total_skips'] = new_state.total_skips
    return new_state, metrics

  replicated = mesh_lib.replicated(mesh)
  state_sharding = replicated if state_sharding is None else state_sharding
  return jax.jit(train_step, in_shardings=(state_sharding, mesh_lib.batch_sharded(mesh)),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,),
                 compiler_options=xla_options.train_step_options(config))


# ============================================================================ setup shared by modes


@dataclasses.dataclass
class Run:
  """The pieces of a run that every mode needs."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: unet.VideoUNet
  logsnr_fn: Callable
  video_shape: tuple[int, int, int, int]
  generate: sample_lib.GenerateFn
  step: int = 0
  ema_params: Any = None
  schedule_params: Any = None  # The learned schedule's parameters (None for the fixed ones).
  # evaluate.make_bpd_fn(run), built at the first bits/dim estimate and kept (like `generate`)
  # until the schedule changes, so periodic evaluations compile it once.
  bpd_fn: Callable | None = None
  # tasks.make_conditional_generate_fn for config.eval.task, built at its first evaluation and
  # kept until the schedule changes (as bpd_fn).
  eval_task_generate: Callable | None = None
  # The high-noise expert of config.sample.expert_workdir (experts.py), or None.
  expert: Any = None
  # The super-resolution stages run after this one's samples (cascade.py; sampling and
  # evaluation only): cascade.Stage, in order.
  stages: tuple = ()


def setup(config: ml_collections.ConfigDict) -> Run:
  config_validation.validate(config, num_devices=jax.device_count())
  video_shape = config_validation.video_shape(config)
  mesh = mesh_lib.make_mesh(config)
  model = create_model(config)
  # The learned schedule starts from its initial parameters (as create_train_state's).
  schedule_params = init_schedule_params(
      config, jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0), 1))
  run = Run(config=config, mesh=mesh, model=model, logsnr_fn=None, video_shape=video_shape,
            generate=None, expert=experts.restore_expert(config))
  use_schedule(run, schedule_params)
  return run


def use_schedule(run: Run, schedule_params: Any) -> None:
  """Points `run.logsnr_fn` and `run.generate` at the schedule with these parameters (None for a
  fixed schedule). For the learned schedule its parameters are constants of the sampler, so each
  new set costs one compilation of the sampler at its first use."""
  if schedule_params is not None:
    # Host copies: the state is replicated, so any one shard is the whole value (also on
    # multi-host meshes, where the global array is not addressable as a whole).
    schedule_params = jax.tree.map(lambda a: np.asarray(a.addressable_data(0))
                                   if isinstance(a, jax.Array) else np.asarray(a), schedule_params)
  run.schedule_params = schedule_params
  run.logsnr_fn = create_logsnr_fn(run.config, schedule_params)
  run.generate = sample_lib.make_generate_fn(run.model, logsnr_fn=run.logsnr_fn, config=run.config,
                                             video_shape=run.video_shape, mesh=run.mesh,
                                             expert=run.expert)
  run.bpd_fn = None
  run.eval_task_generate = None


def train_state_sharding(abstract_state: TrainState, mesh: jax.sharding.Mesh,
                         config: ml_collections.ConfigDict) -> TrainState:
  """The NamedSharding of every state array: params, EMA and optimizer state split over the
  mesh's 'fsdp' axis (mesh_lib.fsdp_sharding; replicated when config.mesh.fsdp is 1); the step,
  counters and learned schedule replicated."""
  sharding = jax.tree.map(lambda _: mesh_lib.replicated(mesh), abstract_state)
  fsdp = lambda tree: mesh_lib.fsdp_sharding(tree, mesh, min_mib=config.mesh.fsdp_min_mib)
  return sharding.replace(params=fsdp(abstract_state.params),
                          ema_params=fsdp(abstract_state.ema_params),
                          opt_state=fsdp(abstract_state.opt_state))


def abstract_train_state(run: Run, tx) -> TrainState:
  rng = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(
      lambda: create_train_state(run.model, tx, run.config, run.video_shape, rng))
  sharding = train_state_sharding(abstract, run.mesh, run.config)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                      sharding)


def restore_for_inference(config: ml_collections.ConfigDict, workdir: str,
                          step: int | None = None) -> Run:
  """Restores the EMA parameters of the checkpoint at `step` (default: the latest), for
  `--mode sample` and `--mode eval` (launch.py --step)."""
  run = setup(config)
  if not os.path.isdir(checkpoints.checkpoint_dir(workdir)):
    raise UserError(f'no checkpoint in {checkpoints.checkpoint_dir(workdir)}: train first with '
                    f'--mode train --workdir {workdir}, or point --workdir at a trained run.')
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  tx, _ = create_optimizer(config)
  abstract_state = abstract_train_state(run, tx)
  if step is None:
    step, state = checkpointer.restore_latest(config, abstract_state=abstract_state)
  else:
    steps = checkpointer.all_steps()
    if step not in steps:
      checkpointer.close()
      raise UserError(f'no checkpoint of step {step} in {checkpointer.directory} (it has '
                      f'{", ".join(map(str, steps)) or "none"}): pick one of those with --step, '
                      'or leave --step out for the latest.')
    checkpointer.check_compatible(step, config)
    state = checkpointer.restore(step, abstract_state=abstract_state)
  checkpointer.close()
  if step is None:
    raise UserError(f'no checkpoint in {checkpointer.directory}: train first with --mode train '
                    f'--workdir {workdir}, or point --workdir at a trained run.')
  run.step, run.ema_params = step, state.ema_params
  if isinstance(state, LearnedScheduleTrainState):
    use_schedule(run, state.schedule_params)
  logging.info('Restored step %d from %s', step, checkpointer.directory)
  return run


# Model fields that a run initialised from a checkpoint (train.init_from) may add or change: the
# layout head and the layout embedding (both zero-initialised, so the initialised model computes
# what the checkpoint's did) and the settings of each; their modules are new parameters. Values:
# what a checkpoint saved without the field had.
ADDABLE_MODEL_FIELDS = {
    field: checkpoints.ADDED_FIELDS['model'][field]
    for field in ('layout_head', 'layout_head_scale', 'layout_embedding', 'layout_embedding_gate',
                  'layout_embedding_gate_center', 'layout_embedding_gate_sharpness',
                  'layout_embedding_detach', 'layout_embedding_frequencies',
                  'layout_embedding_scale')}


def initialise_from(config: ml_collections.ConfigDict, state: TrainState, tx) -> TrainState:
  """`state` (freshly initialised) with the EMA parameters of the latest checkpoint of
  config.train.init_from as its parameters and EMA wherever the names match; a fresh optimizer
  state. The checkpoint's model must be config's but for ADDABLE_MODEL_FIELDS."""
  source = config.train.init_from
  base_config = config.copy_and_resolve_references()
  if not os.path.isdir(checkpoints.checkpoint_dir(source)):
    raise UserError(f'config.train.init_from={source!r} has no checkpoints '
                    f'({checkpoints.checkpoint_dir(source)} does not exist): point it at a '
                    'trained run\'s workdir.')
  try:
    checkpointer = checkpoints.Checkpointer(source, read_only=True)
    latest = checkpointer.latest_step()
    saved = checkpointer.saved_config(latest) if latest is not None else {}
    checkpointer.close()
    with base_config.unlocked():
      for field, off in ADDABLE_MODEL_FIELDS.items():
        base_config.model[field] = saved.get('model', {}).get(field, off)
      # Shapes the checkpoint's optimizer state, which is restored with it (and dropped).
      base_config.optim.trainable = saved.get('optim', {}).get('trainable', '')
      base_config.sample.expert_workdir = ''  # Only the parameters are read: no sampling.
    base = restore_for_inference(base_config, source)
  except UserError as error:
    raise UserError(f'config.train.init_from={source!r}: {error}') from error
  base_params = jax.device_get(base.ema_params)
  params = {k: base_params.get(k, v) for k, v in jax.device_get(state.params).items()}
  logging.info('Initialised from %s (step %d): %s restored; %s new; %s not in this model',
               source, base.step, ', '.join(sorted(set(params) & set(base_params))) or 'nothing',
               ', '.join(sorted(set(params) - set(base_params))) or 'nothing',
               ', '.join(sorted(set(base_params) - set(params))) or 'nothing')
  return state.replace(params=params, ema_params=jax.tree.map(np.copy, params),
                       opt_state=tx.init(params))


# ============================================================================ the training loop


class PreemptionWatcher:
  """Notices SIGTERM, the signal clusters send before preempting a job, so that the training loop
  can save a checkpoint at the current step and exit cleanly.

  One process: a signal handler sets a flag (restored to the previous handler on exit). Several
  processes (jax.distributed): JAX's preemption service receives the signal and picks one step
  at which every process saves (multihost_utils.reached_preemption_sync_point).
  """

  def __init__(self):
    self._requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *unused):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_signal(self, signum, frame):
    del signum, frame
    self._requested = True

  @property
  def requested(self) -> bool:
    """SIGTERM received (this process; what a single process needs outside the step loop)."""
    return self._requested

  def reached(self, step: int) -> bool:
    """Must be called at every step, by every process (the multi-process protocol needs it)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested


def _check_skips(metrics: dict[str, float], step: int, max_consecutive_skips: int,
                 last_checkpoint: Callable[[], int | None]) -> None:
  """Warns about a skipped update; stops the run after too many in a row."""
  skips = int(metrics['train/consecutive_skips'])
  if not skips:
    return
  logging.warning('step %d: non-finite loss (%s) or gradient norm (%s): update skipped (%d in a '
                  'row, %d in all)', step, metrics['train/loss'], metrics['train/grad_norm'], skips,
                  int(metrics['train/total_skips']))
  if skips >= max_consecutive_skips:
    last = last_checkpoint()
    kept = (f'the last checkpoint, step {last}, is intact' if last is not None
            else 'no checkpoint was written')
    raise FloatingPointError(
        f'non-finite loss or gradients in {skips} consecutive steps up to step {step}: training '
        f'stopped; {kept}. Lower --config.optim.learning_rate or check the data '
        f'(--config.train.max_consecutive_skips={max_consecutive_skips}).')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir` when it holds a checkpoint), samples, evaluates.

  Returns the final training metrics and, if `config.train.eval_at_end`, the evaluation results.
  On SIGTERM it saves a checkpoint at the current step and returns early with 'preempted': True
  (nothing to save before the first step or after the last; samples and evaluation are skipped).
  """
  with PreemptionWatcher() as preemption:
    return _train_and_evaluate(config, workdir, preemption)


def _train_and_evaluate(config, workdir, preemption: PreemptionWatcher) -> dict[str, Any]:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  run = setup(config)
  is_main = jax.process_index() == 0

  # ---------------------------------------------------------------- data
  builder = load_dataset_builder(config)  # Before the workdir exists: a data error leaves none.
  if (config.train.init_from and not os.path.isdir(checkpoints.checkpoint_dir(workdir))
      and not os.path.isdir(checkpoints.checkpoint_dir(config.train.init_from))):
    initialise_from(config, None, None)  # Raises the one-line error, before any workdir exists.
  image_source = (image_dataset.load_image_source(config.data, resolution=run.video_shape[1])
                  if config.data.num_images_per_video else None)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise UserError(f'cannot create the workdir {workdir} ({error.strerror}): pass a writable '
                    'directory as --workdir.') from error
  data_iterator = pipeline.make_train_iterator(
      builder=builder, split='train', global_batch_size=config.batch_size, seed=config.seed,
      max_text_length=config.data.max_text_length, text_tokenizer=config.model.text_tokenizer,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_images_per_video=config.data.num_images_per_video, image_source=image_source,
      labels=config.model.conditioning == 'class',
      text_embeddings=(config.model.conditioning == 'text'
                       and config.model.text_encoder == 'precomputed'))

  # ---------------------------------------------------------------- state, maybe restored
  tx, learning_rate = create_optimizer(config)
  checkpointer = checkpoints.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                         keep_every=config.train.keep_checkpoints_every)
  abstract_state = abstract_train_state(run, tx)
  state_sharding = jax.tree.map(lambda a: a.sharding, abstract_state)
  latest, state = checkpointer.restore_latest(config, abstract_state=abstract_state,
                                              data_iterator=data_iterator)
  if latest is not None:
    logging.info('Resumed from %s/%d', checkpointer.directory, latest)
  else:
    init_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
    state = jax.jit(lambda: create_train_state(run.model, tx, config, run.video_shape, init_rng),
                    out_shardings=state_sharding)()
    if config.train.init_from:
      state = jax.device_put(initialise_from(config, state, tx), state_sharding)
  check_trainable(config, state.params)
  start_step = int(state.step)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('Model: %.2fM parameters; devices: %d (%d process(es)); global batch %d',
               num_params / 1e6, jax.device_count(), jax.process_count(), config.batch_size)
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config.to_dict(), f, indent=2, default=list)

  train_step = make_train_step(run.model, logsnr_fn=run.logsnr_fn, tx=tx, config=config,
                               mesh=run.mesh, state_sharding=state_sharding)
  writer = progress.MetricWriter(os.path.join(workdir, 'tensorboard'), enabled=is_main)
  sample_rng = jax.random.PRNGKey(config.sample.seed)
  num_steps = config.train.num_steps

  def sync_schedule():
    if isinstance(state, LearnedScheduleTrainState):
      use_schedule(run, state.schedule_params)

  def write_samples(step):
    sync_schedule()
    directory = os.path.join(workdir, 'samples', f'step_{step}')
    sample_lib.write_samples(run.generate, state.ema_params, prompts=list(config.sample.prompts),
                             num_videos=1, rng=sample_rng, directory=directory, fps=config.sample.fps,
                             frames=sample_lib.conditioning_videos(
                                 config, len(config.sample.prompts), builder))
    logging.info('Wrote samples of step %d to %s', step, directory)

  def evaluate_now(step):
    from vdm_jax import evaluate  # pylint: disable=g-import-not-at-top
    run.step, run.ema_params = step, state.ema_params
    sync_schedule()
    scores = evaluate.evaluate_run(run, workdir, builder=builder)
    writer.write_scalars(step, {f'eval/{k}': v for k, v in scores.items()
                                if isinstance(v, (int, float))})
    return scores

  def record(bar, step, metrics) -> dict[str, float]:
    """Fetches one step's metrics, counts skipped updates, shows and logs the metrics."""
    fetched = {k: float(v) for k, v in jax.device_get(metrics).items()}
    _check_skips(fetched, step, config.train.max_consecutive_skips, checkpointer.latest_step)
    bar.update(step, fetched['train/loss'])
    if step % config.train.log_every == 0 or step == num_steps:
      fetched['train/learning_rate'] = float(learning_rate(step - 1))
      fetched['train/steps_per_second'] = bar.steps_per_second()
      writer.write_scalars(step, fetched)
      logging.info('step %d/%d  loss %.4f  %.2f steps/s  ETA %s', step, num_steps,
                   fetched['train/loss'], bar.steps_per_second(), bar.eta())
    return fetched

  # ---------------------------------------------------------------- loop
  last_metrics: dict[str, float] = {}
  # A step's metrics are fetched after the next step is dispatched, so the host never stalls
  # the device; before a checkpoint they are fetched at once: never save an unchecked update.
  pending = None
  preempted = False
  try:
    with progress.TrainProgress(total=num_steps, start=start_step, enabled=is_main) as bar:
      step = start_step
      if preemption.requested:  # During setup and compilation: the latest checkpoint is current.
        preempted = True
        logging.warning('SIGTERM before the first step: exiting; the checkpoint of step %d is '
                        'current.', step)
      while step < num_steps and not preempted:
        batch = mesh_lib.global_batch(next(data_iterator), run.mesh)
        if step == start_step:  # Compile first: the compiler's freed heap is not kept (CPU peak).
          host_memory.compile_then_release_heap(train_step, state, batch)
        state, metrics = train_step(state, batch)
        step += 1
        if pending is not None:
          last_metrics = record(bar, *pending)
        pending = (step, metrics)
        preempted = preemption.reached(step)
        if step % config.train.checkpoint_every == 0 or step == num_steps or preempted:
          last_metrics, pending = record(bar, *pending), None
          checkpointer.save(step, state=state, data_iterator=data_iterator, config=config,
                            force=preempted)
        if preempted:
          checkpointer.wait()
          logging.warning('SIGTERM: saved checkpoint %s/%d; exiting. Run the same command to '
                          'resume.', checkpointer.directory, step)
          break
        if config.train.sample_every and step % config.train.sample_every == 0 and step < num_steps:
          write_samples(step)
        if config.train.eval_every and step % config.train.eval_every == 0 and step < num_steps:
          evaluate_now(step)
      if pending is not None:
        last_metrics = record(bar, *pending)
  finally:
    checkpointer.close()  # Waits for in-flight saves: they hold checked states.

  results: dict[str, Any] = {'step': int(state.step), **last_metrics}
  if preempted:
    writer.close()
    return {**results, 'preempted': True}
  # Training is over and checkpointed: a SIGTERM from here on skips what is left.
  if config.train.sample_at_end and not preemption.requested:
    write_samples(int(state.step))
  if config.train.eval_at_end and not preemption.requested:
    results['eval'] = evaluate_now(int(state.step))
  writer.close()
  return results
