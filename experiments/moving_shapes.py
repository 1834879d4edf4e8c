"""Default experiment: text-to-video on the built-in `moving_shapes` dataset (16 frames of 32x32).

Run the main job (train, then sample and evaluate) with:

  python launch.py --config experiments/moving_shapes.py --workdir runs/moving_shapes

Measured on a 2-core CPU: the whole job takes 25-36 minutes, depending on the day's machine
(25 min 11 s and 27 min 45 s on 2026-12-02); caption adherence (64 test captions, DDIM 50 steps,
guidance 3) is color 0.86-0.89, shape 0.30, direction 0.14-0.20, all three 0.06-0.09 -- short of
the 80% target (README, Results: the direction word is not used; trained 6,000 steps, the shapes
are right in 0.69 of the videos and the motion smooth, but the direction still at chance).

The `smoke` variant runs the whole job (tiny model, 4 steps) in one to two minutes, as a check:

  python launch.py --config experiments/moving_shapes.py:smoke --workdir /tmp/smoke
"""

from experiments import base


def get_config(variant: str = ''):
  config = base.get_base_config()
  config.data.builder_config = 'default'
  config.batch_size = 8
  # Sized for a 2-core CPU: the U-Net runs on 2x2 patches (16x16 positions, then 8x8 with
  # space + time + text attention), ~1.2 s per step of 8 videos.
  config.model.patch_size = 2
  config.model.channels = 32
  config.model.channel_mult = (1, 2)
  config.model.attention_resolutions = (8,)
  # Frames also meet in a temporal conv in every residual block: measured on this task, temporal
  # attention alone left frames incoherent after 1,200 steps (direction right in 5% of videos).
  config.model.temporal_conv = True
  config.diffusion.parameterization = 'v'
  config.diffusion.loss_weighting = 'v_mse'
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.train.num_steps = 1000
  config.train.checkpoint_every = 200
  config.train.sample_every = 500
  config.sample.guidance_weight = 3.0
  config.sample.batch_size = 8

  if variant == 'smoke':
    config.data.builder_config = 'smoke'
    config.batch_size = 4
    config.model.channels = 16
    config.model.attention_resolutions = (8,)  # One level with attention: a third less to compile.
    config.model.head_dim = 16
    config.model.text_width = 32
    config.model.text_layers = 1
    config.model.text_heads = 2
    config.optim.warmup_steps = 2
    # Constant after warm-up: a cosine decay over train.num_steps is a constant of the compiled
    # train step, so smoke runs of different lengths (the tests') would each compile their own.
    config.optim.lr_schedule = 'constant'
    config.train.num_steps = 4
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.train.sample_every = 0
    config.sample.num_steps = 4
    config.sample.batch_size = 4
    config.sample.num_videos = 1
    config.sample.prompts = ('a red circle moving left', 'a blue square moving up')
    config.eval.num_captions = 4
    config.eval.bpd_num_videos = 4
  elif variant == 'cascade_base':
    # The base stage of a cascade (Imagen Video, Ho et al. 2022): the same videos average-pooled
    # to 16x16, the U-Net on 2x2 patches of them (8x8 and 4x4 positions, attention at both);
    # its samples go to the `super_resolution` stage (sample.cascade_workdirs).
    config.data.pool_factor = 2
    config.model.attention_resolutions = (8, 4)
    config.train.num_steps = 3000
    config.train.checkpoint_every = 500
    config.train.sample_every = 1000
  elif variant == 'super_resolution':
    # A spatial super-resolution stage (Imagen Video sec. 2.3): the default network, given every
    # frame at 16x16 (the video average-pooled 2x2, noise-augmented), generates it at 32x32.
    config.model.frame_conditioning = True
    config.train.cond_frames = 'low_res'
    config.train.cond_low_res_factor = 2
    config.eval.bpd_num_videos = 0  # (not implemented for frame-conditioned models)
  elif variant == 'temporal_base':
    # The base stage of a temporal cascade: the same videos at half the frame rate (frames 0, 2,
    # ..., 14: 8 frames of 32x32); its `temporal_super_resolution` stage doubles it.
    config.data.frame_skip = 2
  elif variant == 'temporal_super_resolution':
    # A temporal super-resolution stage (Imagen Video sec. 2.3): the default network, given frames
    # 0, 2, ..., 14 (noise-augmented), generates the 8 between them.
    config.model.frame_conditioning = True
    config.train.cond_frames = 'low_frame_rate'
    config.train.cond_frame_stride = 2
    config.eval.bpd_num_videos = 0  # (not implemented for frame-conditioned models)
  elif variant == 'prediction':
    # A video-prediction model (Ho et al. 2022, sec. 5; BAIR's 1 -> 15 protocol): the default
    # network, given the first frame (noise-augmented), generates the 15 after it; given none (a
    # quarter of the training videos: masked conditional training, Voleti et al. 2022), it
    # generates from the caption alone. With sample.task='extend' it makes a story's first block
    # from its prompt and each later block from the last frame of the one before (tasks.py).
    config.model.frame_conditioning = True
    config.train.cond_frames = 'first'
    config.train.num_cond_frames = 1
    config.train.cond_drop_prob = 0.25
    config.eval.bpd_num_videos = 0  # (not implemented for frame-conditioned models)
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of experiments/moving_shapes.py; allowed: '', "
                     "'smoke', 'cascade_base', 'super_resolution', 'temporal_base', "
                     "'temporal_super_resolution' or 'prediction'.")
  return config
