r"""Trains the caption classifier (video_classifier.py: the features of the learned-feature FVD,
the scorer of 'digit_accuracy') on the training split of `config.data` (moving_shapes or
moving_digits) and saves it (orbax) with its test accuracy:

  python -m vdm_jax.metrics.train_classifier --config experiments/feature_classifier.py \
      --workdir runs/feature_classifier
  python -m vdm_jax.metrics.train_classifier --config experiments/digit_classifier.py \
      --workdir runs/digit_classifier

Then evaluate a diffusion run with it: --config.eval.metrics="('adherence', 'bpd', 'fvd_learned')"
--config.eval.classifier_workdir=runs/feature_classifier (moving_digits: 'digit_accuracy' and
runs/digit_classifier). Fields: `config.classifier.*` (experiments/base.py).
"""

import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections import config_flags

from vdm_jax import config_validation
from vdm_jax import progress
from vdm_jax.data import pipeline
from vdm_jax.data import registry
from vdm_jax.errors import UserError
from vdm_jax.metrics import video_classifier


def loss_of(logits: dict[str, jax.Array], labels: dict[str, jax.Array], dataset: str) -> jax.Array:
  """Sum over the heads of `dataset` of the mean softmax cross-entropy, against the class of a
  'one' head, the uniform distribution over the named classes of a 'set' head."""
  loss = 0.0
  for head, (kind, _) in video_classifier.heads_of(dataset).items():
    if kind == 'one':
      loss += optax.softmax_cross_entropy_with_integer_labels(logits[head], labels[head]).mean()
    else:
      target = labels[head] / labels[head].sum(-1, keepdims=True)
      loss += optax.softmax_cross_entropy(logits[head], target).mean()
  return loss


def make_train_step(model, tx):
  """step(params, opt_state, videos uint8 [B, T, H, W, 3], labels {head: [B]}) ->
  (params, opt_state, loss)."""

  def step(params, opt_state, videos, labels):
    def loss_fn(p):
      return loss_of(model.apply({'params': p}, videos)[1], labels, model.dataset)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def accuracy_of(model, params, videos: np.ndarray, captions: list[str], *,
                batch_size: int) -> dict[str, float]:
  """{head: accuracy, 'all': ...} on videos [N, T, H, W, 3] with captions of model.dataset."""
  return video_classifier.caption_accuracy(
      video_classifier.make_logits_fn(model, {'params': params}), videos, captions,
      dataset=model.dataset, batch_size=batch_size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config.classifier` on config.data's training split, measures its accuracy on the
  first `classifier.eval_videos` test videos, saves both into `workdir`; returns the info saved."""
  config_validation.validate(config)
  config_validation.validate_classifier(config)
  c = config.classifier
  video_shape = registry.video_shape(config)
  builder = registry.load_builder(config)
  train_source = builder.as_data_source(split='train')
  model = video_classifier.create_model(c, config.data.name)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 3)  # apart from the diffusion's keys
  params = jax.jit(model.init)(key, jnp.zeros((1, *video_shape), jnp.uint8))['params']
  tx = optax.adam(optax.cosine_decay_schedule(c.learning_rate, c.num_steps))
  opt_state = tx.init(params)
  step_fn = make_train_step(model, tx)
  rng = np.random.default_rng([config.seed, 3])
  start = time.time()
  losses = []
  for step in range(1, c.num_steps + 1):
    examples = [train_source[int(i)] for i in rng.integers(0, len(train_source), c.batch_size)]
    videos = np.stack([e['video'] for e in examples])
    labels = video_classifier.labels_of([e['caption'] for e in examples], model.dataset)
    params, opt_state, loss = step_fn(params, opt_state, videos, labels)
    losses.append(loss)
    if step % c.log_every == 0 or step == c.num_steps:
      logging.info('classifier step %d/%d: loss %.4f (%.1f s)', step, c.num_steps,
                   float(np.mean(jax.device_get(losses))), time.time() - start)
      losses = []
  train_seconds = time.time() - start
  test_videos, test_captions = pipeline.make_eval_source(builder=builder, split='test',
                                                         num_examples=c.eval_videos)
  accuracy = accuracy_of(model, params, test_videos, test_captions, batch_size=c.batch_size)
  info = {'widths': list(c.widths), 'feature_dim': c.feature_dim, 'time_conv': c.time_conv,
          'pool': c.pool, 'video_shape': list(video_shape),
          'data': {'name': config.data.name, 'builder_config': config.data.builder_config},
          'num_steps': c.num_steps, 'batch_size': c.batch_size,
          'train_seconds': round(train_seconds, 1), 'test_videos': len(test_videos),
          'test_accuracy': accuracy}
  video_classifier.save(workdir, params, info)
  logging.info('Caption classifier saved in %s; test accuracy %s', workdir, accuracy)
  return info


FLAGS = flags.FLAGS


def main(argv):
  del argv
  progress.quiet_library_logs()
  try:
    info = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(f'test accuracy ({info["test_videos"]} videos): ' + ', '.join(
      f'{k} {v:.3f}' for k, v in info['test_accuracy'].items()) +
        f'; trained {info["num_steps"]} steps in {info["train_seconds"]:.0f} s')
  return 0


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Experiment config file[:variant].',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where the classifier is saved.')
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
