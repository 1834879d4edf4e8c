"""BAIR robot pushing at 16x64x64, with Ho et al. 2022 ("Video Diffusion Models") Appendix A,
"BAIR Robot Pushing".

  python launch.py --config experiments/bair.py --workdir runs/bair --mode inspect
  python launch.py --config experiments/bair.py --workdir runs/bair
  python launch.py --config experiments/bair.py:laptop --workdir runs/bair_laptop

Needs the TFDS `bair_robot_pushing_small` dataset (30 frames of 64x64; 16-frame clips at a
random start). The videos have no captions: every caption is empty, so the model is
unconditional. The paper evaluates video prediction (FVD 66.9 with reconstruction guidance from
1 conditioning frame); reconstruction guidance is not implemented here, so only unconditional
clips can be sampled. Rows not expressible here are listed in experiments/_video_diffusion_paper.py.
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
  config.model.cond_drop_prob = 0.0  # Unconditional data: the text is always empty anyway.
  config.sample.prompts = ('',)
  config.sample.num_videos = 4
  if variant == 'laptop':
    paper.shrink_for_laptop(config)
  return config
