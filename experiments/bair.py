"""BAIR robot pushing at 16x64x64, with Ho et al. 2022 ("Video Diffusion Models") Appendix A,
"BAIR Robot Pushing".

  python launch.py --config experiments/bair.py --workdir runs/bair --mode inspect
  python launch.py --config experiments/bair.py --workdir runs/bair
  python launch.py --config experiments/bair.py:laptop --workdir runs/bair_laptop

Needs the TFDS `bair_robot_pushing_small` dataset (30 frames of 64x64; 16-frame clips at a
random start). The videos have no captions. The paper evaluates video prediction from 1
conditioning frame (FVD 66.9, with reconstruction guidance); here the model is trained for that
task directly: frame-conditioned (model.frame_conditioning) on the first frame, 1 -> 15 frames,
with noise conditioning augmentation, unconditional otherwise (model.conditioning 'none').
Samples continue the first frames of test clips. Rows not expressible here are listed in experiments/_video_diffusion_paper.py.
`:laptop`: a small model on 8x32x32 clips; nothing measured with it yet.
"""

from experiments import _video_diffusion_paper as paper


def get_config(variant: str = ''):
  paper.check_variant('bair', variant)
  config = paper.get_paper_config(
      channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=3, learning_rate=2e-4, b2=0.999,
      batch_size=128, ema_decay=0.999, dropout=0.1, weight_decay=0.01, num_steps=660_000,
      sampler='pc', sample_steps=256, gamma=0.0, parameterization='v',
      images_per_video=8)
  config.data.name = 'bair_robot_pushing_small'
  config.data.random_flip = True  # "Data augmentation: left-right flips"
  config.model.conditioning = 'none'
  config.model.cond_drop_prob = 0.0  # No conditioning to drop.
  config.model.frame_conditioning = True  # Video prediction: frame 1 given, frames 2-16 generated.
  config.train.cond_frames = 'first'
  config.train.num_cond_frames = 1
  config.sample.prompts = ('unconditional',)  # 'none': a prompt only counts videos.
  config.sample.num_videos = 4
  # The paper's protocol (sec. 4.1, after Babaeizadeh et al. / Unterthiner et al.): FVD of 100
  # samples of each of the 256 test videos' continuations, against those 256 videos, with the
  # user's I3D weights: --mode eval --config.eval.i3d_weights=i3d.npz.
  config.eval.metrics = ('fvd_i3d',)
  config.eval.num_captions = 256
  config.eval.num_repeats = 100
  config.eval.fvd_num_reference = 256
  config.eval.bpd_num_videos = 0  # Bits/dim of frame-conditioned models is not implemented.
  if variant == 'laptop':
    paper.shrink_for_laptop(config)
  return config
