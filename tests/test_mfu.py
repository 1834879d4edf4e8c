"""benchmarks/mfu.py's helpers (the data-sheet peak picked for a device kind, the cuDNN attention
calls counted in a compiled program) and benchmarks/common.py's synthetic batch, which the train
step can read for every kind of conditioning."""

import numpy as np
import pytest

from benchmarks import common
from benchmarks import mfu
from experiments import moving_shapes
from vdm_jax import conditioning
from vdm_jax import train


def test_spec_peak_picks_the_most_specific_device_kind():
  assert mfu.spec_peak_tflops('NVIDIA H100 PCIe', 'bfloat16') == 756.0  # Before plain 'h100'.
  assert mfu.spec_peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4
  assert mfu.spec_peak_tflops('NVIDIA H100 80GB HBM3', 'float32') == 494.7
  assert mfu.spec_peak_tflops('TPU v5 lite', 'bfloat16') == 197.0  # Before plain 'tpu v5'.
  assert mfu.spec_peak_tflops('TPU v5p', 'bfloat16') == 459.0
  assert mfu.spec_peak_tflops('cpu', 'float32') is None


def test_attention_kernels_counts_forward_cudnn_calls():
  hlo = '\n'.join([
      '%a = custom-call(%q, %k, %v), custom_call_target="__cudnn$fmhaSoftmax", metadata={}',
      '%b = custom-call(%q, %k, %v, %bias), custom_call_target="__cudnn$fmhaScaleBiasSoftmax"',
      '%c = custom-call(%q, %k), custom_call_target="__cudnn$fmhaScaleBiasSoftmaxBackward"',
      '%d = dot(%q, %k), metadata={op_name="dot_product_attention"}'])
  assert mfu.attention_kernels(hlo) == {'cudnn_fmha': 2}
  assert mfu.attention_kernels('%d = dot(%q, %k)') == {'cudnn_fmha': 0}


@pytest.mark.parametrize('fields', [
    dict(),  # Text, the built-in encoder: tokens.
    dict(conditioning='class', num_classes=5),
    dict(conditioning='none'),
    dict(text_encoder='precomputed', text_embedding_dim=6),
])
def test_synthetic_batch_holds_what_the_step_reads(fields):
  config = moving_shapes.get_config()
  config.data.num_images_per_video = 2
  for name, value in fields.items():
    config.model[name] = value
  model = train.create_model(config)
  batch = common.synthetic_batch(config, model, 3, (4, 8, 8, 3))
  assert batch['video'].shape == (3, 6, 8, 8, 3)  # 4 frames + 2 appended images.
  assert -1 <= batch['video'].min() < -0.5 and 0.5 < batch['video'].max() <= 1
  inputs = conditioning.batch_inputs(model, batch)  # KeyError if a read input is missing.
  assert set(inputs) == set(conditioning.input_names(model)) & set(conditioning.BATCH_KEYS)
  if 'text_tokens' in inputs:  # Real tokens (not padding), inside the vocabulary.
    tokens = inputs['text_tokens']
    assert tokens.min() >= 1 and tokens.max() < model.text_vocab_size
  if 'labels' in inputs:
    assert np.all(inputs['labels'] < config.model.num_classes)
