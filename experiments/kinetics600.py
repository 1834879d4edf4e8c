"""Kinetics-600 at 16x64x64, with Ho et al. 2022 ("Video Diffusion Models") Appendix A, "Kinetics".

  python launch.py --config experiments/kinetics600.py --workdir runs/k600 --mode inspect
  python launch.py --config experiments/kinetics600.py --workdir runs/k600 \
      --config.data.video_dir=/path/to/kinetics600/train

TFDS has no Kinetics builder, so the videos come through `video_folder` (config.data.video_dir:
downloaded Kinetics-600 clips, each with its class name as caption in <stem>.txt or
captions.jsonl; see README, Data). The paper evaluates video prediction (FVD 16.2 with
reconstruction guidance from 5 conditioning frames), sampled from an unconditional model as here
(model.conditioning 'none'); reconstruction guidance is config.sample.task / vdm_jax/tasks.py. Rows not expressible here are listed in experiments/_video_diffusion_paper.py.
`:laptop`: a small model on 8x32x32 clips of the same folder; nothing measured with it yet.
"""

from experiments import _video_diffusion_paper as paper


def get_config(variant: str = ''):
  paper.check_variant('kinetics600', variant)
  config = paper.get_paper_config(
      channels=256, channel_mult=(1, 2, 4, 8), num_res_blocks=2, learning_rate=2e-4, b2=0.99,
      batch_size=256, ema_decay=0.9999, dropout=0.1, weight_decay=0.0, num_steps=220_000,
      sampler='pc', sample_steps=128, gamma=0.0, parameterization='v',
      images_per_video=8)
  config.data.name = 'video_folder'
  config.data.video_dir = ''  # Set on the command line: --config.data.video_dir=...
  config.data.test_fraction = 0.05  # Not from the paper (it uses the official splits).
  config.model.conditioning = 'none'
  config.model.cond_drop_prob = 0.0  # No conditioning to drop.
  config.sample.prompts = ('unconditional',)  # 'none': a prompt only counts videos.
  config.sample.num_videos = 4
  if variant == 'laptop':
    paper.shrink_for_laptop(config)
  return config
