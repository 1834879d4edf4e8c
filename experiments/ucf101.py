"""UCF101 at 16x64x64, with Ho et al. 2022 ("Video Diffusion Models") Appendix A, "UCF101".

  python launch.py --config experiments/ucf101.py --workdir runs/ucf101 --mode inspect
  python launch.py --config experiments/ucf101.py --workdir runs/ucf101
  python launch.py --config experiments/ucf101.py:laptop --workdir runs/ucf101_laptop
  python launch.py --config experiments/ucf101.py --workdir runs/ucf101 --mode eval \
      --config.eval.c3d_weights=c3d.npz  # FID and IS by C3D (README: Video FID and IS)

Needs the TFDS `ucf101` dataset prepared in config.data.data_dir (see README, Data). The paper's
model is unconditional, as here (model.conditioning 'none'); the class-conditional variant is
--config.model.conditioning=class --config.model.num_classes=101 (prompts: class names such as
'ApplyEyeMakeup' or 'apply eye makeup', or indices). Paper result (Table 1): IS 57
(unconditional, 16x64x64); not reproduced here: it took 60k steps of batch 128 on 128 TPU-v4
chips. Rows not expressible here
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
  # The paper's protocol (Table 1, after TGANv2: Saito et al. 2020): FID and IS by TGANv2's
  # UCF-101-finetuned C3D (vdm_jax/metrics/c3d.py) of 10,000 samples, here 5 repeats of 2,000 (as
  # TGANv2's script: IS of each set of 2,048 in one split, mean +- std over 10 sets); FID against
  # 2,000 test videos (TGANv2: statistics of training clips), with the user's weights:
  # --mode eval --config.eval.c3d_weights=c3d.npz. The split of 10,000 is this config's.
  config.eval.metrics = ('fid_c3d', 'is_c3d')
  config.eval.num_captions = 2_000  # Unconditional: the count of videos per repeat.
  config.eval.num_repeats = 5
  config.eval.is_splits = 1
  config.eval.fvd_num_reference = 2_000
  if variant == 'laptop':
    paper.shrink_for_laptop(config)
    config.eval.metrics = ('bpd',)  # C3D reads 16-frame clips, not the laptop's 8 frames.
  return config
