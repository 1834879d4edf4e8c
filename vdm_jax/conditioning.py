"""The denoiser's conditioning inputs, from a training batch or from prompts, and the network
conditioned on them as a sampler's denoiser (classifier-free guidance).

`config.model.conditioning` (models/unet.py, CONDITIONINGS) decides what the U-Net reads besides
z and the noise level:

  'text', text_encoder 'builtin':     text_tokens int32 [B, L]  <- batch 'tokens' / tokenized prompts;
  'text', text_encoder 'precomputed': text_embedding float32 [B, L, D], text_embedding_mask bool
                                      [B, L]  <- batch keys of the same names / the prompt table
                                      `config.sample.prompt_embeddings` (a .npz);
  'class':                            labels int32 [B]  <- batch 'label' / prompts that are class
                                      indices ('3') or class names (`class_names`);
  'none':                             nothing.

Frame conditioning (frame_conditioning.py) adds cond_frames, cond_mask and cond_logsnr, which the
train step and the sampler make themselves.
"""

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vdm_jax import samplers
from vdm_jax.data import tokenizer
from vdm_jax.errors import UserError

# Model input name -> key of the training batch (pipeline.to_model_inputs) that holds it.
BATCH_KEYS = {'text_tokens': 'tokens', 'labels': 'label', 'text_embedding': 'text_embedding',
              'text_embedding_mask': 'text_embedding_mask'}


def input_names(model) -> tuple[str, ...]:
  """The conditioning inputs `model` reads (VideoUNet.conditioning_inputs); stand-in networks
  of tests without that method read the text tokens, as the default U-Net."""
  names = getattr(model, 'conditioning_inputs', None)
  return names() if names is not None else ('text_tokens',)


def batch_inputs(model, batch: dict[str, Any]) -> dict[str, Any]:
  """The model's conditioning keyword inputs (frames excepted) taken from a training batch."""
  return {name: batch[BATCH_KEYS[name]] for name in input_names(model) if name in BATCH_KEYS}


def abstract_inputs(config: ml_collections.ConfigDict, model, *, batch_size: int,
                    video_shape: Sequence[int]) -> dict[str, jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs of every conditioning input `model` reads (for init and eval_shape);
  video_shape: (frames, height, width, channels) of z, appended images included."""
  L = config.data.max_text_length
  shapes = {
      'text_tokens': ((batch_size, L), jnp.int32),
      'labels': ((batch_size,), jnp.int32),
      'text_embedding': ((batch_size, L, config.model.text_embedding_dim), jnp.float32),
      'text_embedding_mask': ((batch_size, L), jnp.bool_),
      'cond_frames': ((batch_size, *video_shape), jnp.float32),
      'cond_mask': ((batch_size, video_shape[0]), jnp.bool_),
      'cond_logsnr': ((batch_size,), jnp.float32),
  }
  return {name: jax.ShapeDtypeStruct(*shapes[name]) for name in input_names(model)}


def dummy_inputs(config, model, *, batch_size: int, video_shape: Sequence[int]) -> dict[str, jax.Array]:
  """Zeros of `abstract_inputs`' shapes."""
  return {k: jnp.zeros(a.shape, a.dtype) for k, a in
          abstract_inputs(config, model, batch_size=batch_size, video_shape=video_shape).items()}


# ------------------------------------------------------------------------------ prompts


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  """The names of the dataset's classes in label order, where known without preparing the data
  (moving_shapes: its single-object captions; TFDS: the label feature's names); else None."""
  data = config.data
  if data.name == 'moving_shapes':
    from vdm_jax.data import moving_shapes  # pylint: disable=g-import-not-at-top
    return moving_shapes.class_names()
  if data.name in ('moving_digits', 'video_folder'):
    return None
  from vdm_jax.data import registry  # pylint: disable=g-import-not-at-top
  return registry.tfds_class_names(data)


def labels_of_prompts(prompts: Sequence[str], *, num_classes: int,
                      names: Sequence[str] | None = None,
                      caption_template: str = 'a video of {label}') -> np.ndarray:
  """int32 [N]: each prompt is a class index ('3') or a class name, written as stored
  ('ApplyEyeMakeup'), as text ('apply eye makeup') or as its caption ('a video of apply eye
  makeup'). A prompt that is none of these is a UserError listing a few names."""
  from vdm_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  lookup = {}
  for index, name in enumerate(names or ()):
    text = preprocess.label_to_text(name)
    for key in (name, text, caption_template.format(label=text)):
      lookup.setdefault(key.strip().lower(), index)
  labels = []
  for prompt in prompts:
    key = prompt.strip().lower()
    if key.isdigit() and int(key) < num_classes:
      labels.append(int(key))
    elif key in lookup:
      labels.append(lookup[key])
    else:
      shown = ', '.join(repr(n) for n in list(names or ())[:3])
      raise UserError(f'--prompt {prompt!r} is not a class of this class-conditional model '
                      f'(config.model.conditioning=\'class\'): give a class index in [0, '
                      f'{num_classes}) or a class name{" such as " + shown if shown else ""}.')
  return np.asarray(labels, np.int32)


def load_prompt_embeddings(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{prompt: (text_embedding float32 [L, D], mask bool [L])} from a .npz with 'prompts' [N]
  (str), 'text_embedding' [N, L, D] and optionally 'text_embedding_mask' [N, L] (default: rows
  that are not all zero)."""
  if not path or not os.path.isfile(os.path.expanduser(path)):
    raise UserError(f'config.sample.prompt_embeddings={path!r} is not a file: precomputed text '
                    'embeddings (config.model.text_encoder=\'precomputed\') need a .npz of the '
                    'prompts\' embeddings (keys prompts, text_embedding[, text_embedding_mask]).')
  with np.load(os.path.expanduser(path), allow_pickle=False) as f:
    prompts = [str(p) for p in f['prompts']]
    embedding = np.asarray(f['text_embedding'], np.float32)
    mask = (np.asarray(f['text_embedding_mask'], bool) if 'text_embedding_mask' in f
            else np.any(embedding != 0, axis=-1))
  return {p: (embedding[i], mask[i]) for i, p in enumerate(prompts)}


def pad_embedding(embedding: np.ndarray, mask: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """[l, D], [l] -> [length, D] float32, [length] bool: cut or zero-padded (padding not attended)."""
  embedding, mask = np.asarray(embedding, np.float32)[:length], np.asarray(mask, bool)[:length]
  pad = length - len(embedding)
  return (np.pad(embedding, ((0, pad), (0, 0))), np.pad(mask, (0, pad)))


def prompt_inputs(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> dict[str, np.ndarray]:
  """Host arrays [N, ...] of the conditioning inputs for `prompts` (frames excepted); the
  null prompt '' (padding of a sampling batch) maps to zeros."""
  model = config.model
  if model.conditioning == 'none':
    return {}
  if model.conditioning == 'class':
    real = [p for p in prompts if p]
    labels = labels_of_prompts(real, num_classes=model.num_classes, names=class_names(config),
                               caption_template=config.data.caption_template)
    out = np.zeros(len(prompts), np.int32)
    out[[i for i, p in enumerate(prompts) if p]] = labels
    return {'labels': out}
  L = config.data.max_text_length
  if model.text_encoder == 'builtin':
    return {'text_tokens': tokenizer.tokenize(list(prompts), L, kind=model.text_tokenizer)}
  table = load_prompt_embeddings(config.sample.prompt_embeddings)
  embeddings, masks = [], []
  for prompt in prompts:
    if prompt and prompt not in table:
      raise UserError(f'--prompt {prompt!r} has no embedding in config.sample.prompt_embeddings='
                      f'{config.sample.prompt_embeddings!r}: add it there (precomputed by the '
                      'same encoder as the training data).')
    embedding, mask = table.get(prompt, (np.zeros((L, model.text_embedding_dim), np.float32),
                                         np.zeros(L, bool)))
    if embedding.shape[-1] != model.text_embedding_dim:
      raise UserError(f'config.sample.prompt_embeddings={config.sample.prompt_embeddings!r} holds '
                      f'{embedding.shape[-1]}-dimensional embeddings; the model reads '
                      f'config.model.text_embedding_dim={model.text_embedding_dim}: use embeddings '
                      'of the training data\'s encoder.')
    embedding, mask = pad_embedding(embedding, mask, L)
    embeddings.append(embedding)
    masks.append(mask)
  return {'text_embedding': np.stack(embeddings), 'text_embedding_mask': np.stack(masks)}


def guided_denoiser(model, params, cond: dict[str, jax.Array], *,
                     config: ml_collections.ConfigDict, batch: int,
                     clip_x: bool) -> samplers.DenoiseFn:
  """The network as a denoiser (z [batch, ...], logsnr [batch]) -> (x_hat, eps_hat), with
  classifier-free guidance at config.sample.guidance_weight (the conditional and unconditional
  passes batched into one network call; none for unconditional models).

  cond: the model's conditioning inputs [batch, ...] (prompt_inputs). clip_x: clip
  (or dynamically threshold, config.sample.dynamic_threshold) x_hat, after guidance; False for
  callers that clip later themselves (guidance.conditional_denoiser).
  """
  weight = config.sample.guidance_weight if config.model.conditioning != 'none' else 0.0
  parameterization = config.diffusion.parameterization
  threshold = config.sample.dynamic_threshold
  if weight == 0.0:
    def network(z, logsnr):
      return model.apply({'params': params}, z, logsnr=logsnr, **cond,
                         drop_text=jnp.zeros((batch,), bool))
    return samplers.model_denoiser(network, parameterization=parameterization, clip_x=clip_x,
                                   dynamic_threshold_percentile=threshold)
  both = jax.tree.map(lambda a: jnp.concatenate([a, a]), cond)
  drop_text = jnp.concatenate([jnp.zeros((batch,), bool), jnp.ones((batch,), bool)])

  def network_cond_uncond(z2, logsnr2):
    return model.apply({'params': params}, z2, logsnr=logsnr2, **both, drop_text=drop_text)
  # Clip x only after guidance: the two unclipped predictions are combined first.
  return samplers.classifier_free_guidance(
      samplers.model_denoiser(network_cond_uncond, clip_x=False, parameterization=parameterization),
      guidance_weight=weight, clip_x=clip_x, dynamic_threshold_percentile=threshold)
