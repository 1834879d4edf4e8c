"""UCF101 at 16x64x64, with Ho et al. 2022 ("Video Diffusion Models") Appendix A, "UCF101".

  python launch.py --config experiments/ucf101.py --workdir runs/ucf101 --mode inspect
  python launch.py --config experiments/ucf101.py --workdir runs/ucf101
  python launch.py --config experiments/ucf101.py:laptop --workdir runs/ucf101_laptop

Needs the TFDS `ucf101` dataset prepared in config.data.data_dir (see README, Data). The paper's
model is unconditional, as here (model.conditioning 'none'); the class-conditional variant is
--config.model.conditioning=class --config.model.num_classes=101 (prompts: class names such as
'ApplyEyeMakeup' or 'apply eye makeup', or indices). Paper result: FVD 256 / IS 57 (unconditional, 16x64x64); not
reproduced here: it took 60k steps of batch 128 on 128 TPU-v4 chips. Rows not expressible here
are listed in experiments/_video_diffusion_paper.py. `:laptop` trains a small model on 8x32x32
clips of the same dataset; nothing has been measured with it yet.
"""

from experiments import _video_diffusion_paper as paper


def get_config(variant: str = ''):
  paper.check_variant('ucf101', variant)
  config = paper.get_paper_config(
      channels=256, channel_mult=(1, 2, 4, 8), num_res_blocks=2, learning_rate=3e-4, b2=0.99,
      batch_size=128, ema_decay=0.9999, dropout=0.1, weight_decay=0.0, num_steps=60_000,
      sampler='ancestral', sample_steps=256, gamma=0.1, parameterization='eps',
      images_per_video=8)
  config.data.name = 'ucf101'
  config.data.caption_template = 'a video of {label}'
  config.model.conditioning = 'none'  # "unconditional video generation" (the paper's Table 1)
  config.model.cond_drop_prob = 0.0  # No conditioning to drop.
  config.sample.prompts = ('unconditional',)  # 'none': a prompt only counts videos.
  config.sample.num_videos = 4
  if variant == 'laptop':
    paper.shrink_for_laptop(config)
  return config
