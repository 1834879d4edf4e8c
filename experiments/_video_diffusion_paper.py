"""Settings shared by the configs of Ho et al. 2022, "Video Diffusion Models" (arXiv 2204.03458),
Appendix A ("Details and hyperparameters"); each experiment file sets its table's values.

"Conditioning embedding dimension 1024" is `model.cond_embedding_dim` (every table);
"Conditioning embedding MLP layers" (2 or 4 in the tables) is `model.cond_mlp_layers`, left at 2
in every config here: the per-table value has not been checked against the paper.
"Reconstruction guidance weight" (BAIR 50, Kinetics 9) is `sample.reconstruction_weight` (w_r of
vdm_jax/guidance.py, the paper's eq. 7): kinetics600.py sets 9; bair.py trains a frame-conditioned
model for its 1 -> 15 task instead, which needs no guidance (an unconditional BAIR model with
reconstruction guidance: `--config.model.frame_conditioning=False --config.eval.task=predict
--config.sample.num_known_frames=1 --config.sample.reconstruction_weight=50`).
Rows of the tables that this codebase cannot express yet, stated once here:
- Text conditioning: the paper conditions on frozen BERT-large embeddings; here a small
  Transformer over word or byte tokens is trained with the model (its size is not from the paper).
"Joint training independent images per video" is `data.num_images_per_video`: 8 in the UCF101,
BAIR, Kinetics and large text-to-video tables; the small text-to-video model's ablation ran 0, 4
and 8 (set to 8 here); the 9x128x128 model (7) is not included. The paper does not say how the
images are text-conditioned: here they share their video's caption (vdm_jax/data/pipeline.py).
Not in the tables, so kept from experiments/base.py rather than invented: learning-rate
warm-up and schedule, gradient clipping, Adam epsilon, the loss weighting (chosen to match the
prediction target), classifier-free guidance settings.
"""

import ml_collections

from experiments import base


def get_paper_config(*, channels: int, channel_mult: tuple[int, ...], num_res_blocks: int,
                     learning_rate: float, b2: float, batch_size: int, ema_decay: float,
                     dropout: float, weight_decay: float, num_steps: int, sampler: str,
                     sample_steps: int, gamma: float, parameterization: str,
                     images_per_video: int, num_frames: int = 16,
                     resolution: int = 64) -> ml_collections.ConfigDict:
  """The common rows of the Appendix A tables; every argument is one row."""
  config = base.get_base_config()
  config.batch_size = batch_size
  config.data.num_frames = num_frames  # "Video resolution 16x64x64 frameskip 1"
  config.data.resolution = resolution
  config.data.frame_skip = 1
  config.data.num_images_per_video = images_per_video  # "Joint training independent images ..."
  config.model.channels = channels  # "Base channels"
  config.model.channel_mult = channel_mult  # "Channel multipliers"
  config.model.num_res_blocks = num_res_blocks  # "Blocks per resolution"
  config.model.attention_resolutions = (8, 16, 32)  # "Attention resolutions"
  config.model.head_dim = 64  # "Attention head dimension"
  config.model.dropout = dropout
  config.model.cond_embedding_dim = 1024  # "Conditioning embedding dimension"
  config.diffusion.schedule = 'cosine'  # "Diffusion noise schedule"
  config.diffusion.logsnr_min = -20.0  # "Noise schedule log SNR range [-20, 20]"
  config.diffusion.logsnr_max = 20.0
  config.diffusion.parameterization = parameterization  # "Prediction target"
  # Not in the tables: the MSE on the predicted quantity (the plain loss for that target).
  config.diffusion.loss_weighting = {'eps': 'eps_mse', 'v': 'v_mse'}[parameterization]
  config.optim.learning_rate = learning_rate
  config.optim.b1 = 0.9  # "Optimizer Adam (beta_1 = 0.9, beta_2 = ...)"
  config.optim.b2 = b2
  config.optim.weight_decay = weight_decay  # Decoupled (AdamW); the paper does not say which kind.
  config.optim.lr_schedule = 'constant'  # Not in the tables: no decay mentioned.
  config.optim.ema_decay = ema_decay
  config.train.num_steps = num_steps  # "Training steps"
  config.train.checkpoint_every = 5000  # Not from the paper.
  config.train.sample_every = 10000  # Not from the paper.
  config.train.eval_at_end = False  # Caption adherence reads moving_shapes captions only.
  config.sample.sampler = sampler  # 'pc': the tables' "(+N Langevin cor.)"
  config.sample.num_steps = sample_steps  # "Sampling timesteps"
  config.sample.gamma = gamma  # "Sampling log-variance interpolation"
  config.sample.batch_size = 8
  return config


def shrink_for_laptop(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The 'laptop' variant: the same experiment, small enough to train a few steps on a CPU
  (8 frames of 32x32 and half the appended images, a 2-level U-Net of 32/64 channels, batch 4,
  short sampling)."""
  config.batch_size = 4
  config.eval.num_repeats = 1  # One sample per test video, not a paper protocol's repeats.
  config.eval.num_captions = min(config.eval.num_captions, 64)
  config.data.num_frames = 8
  config.data.num_images_per_video //= 2  # Half the frames, half the appended images.
  config.data.resolution = 32
  config.model.channels = 32
  config.model.channel_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.attention_resolutions = (16,)
  config.model.head_dim = 32
  config.model.text_width = 64
  config.model.text_layers = 1
  config.model.cond_embedding_dim = 0  # 4 x channels
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 20
  config.train.num_steps = 200
  config.train.log_every = 10
  config.train.checkpoint_every = 100
  config.train.sample_every = 0
  config.sample.num_steps = 32
  config.sample.batch_size = 4
  config.sample.num_videos = 1
  return config


def check_variant(name: str, variant: str) -> None:
  if variant not in ('', 'laptop'):
    raise ValueError(f"Unknown variant {variant!r} of experiments/{name}.py; allowed: '' or 'laptop'.")
