"""Kinetics-600 at 16x64x64, with Ho et al. 2022 ("Video Diffusion Models") Appendix A, "Kinetics".

  python launch.py --config experiments/kinetics600.py --workdir runs/k600 --mode inspect
  python launch.py --config experiments/kinetics600.py --workdir runs/k600 \
      --config.data.video_dir=/path/to/kinetics600/train

TFDS has no Kinetics builder, so the videos come through `video_folder` (config.data.video_dir:
downloaded Kinetics-600 clips, each with its class name as caption in <stem>.txt or
captions.jsonl; see README, Data). The paper evaluates video prediction (FVD 16.2 with
reconstruction guidance from 5 conditioning frames), sampled from an unconditional model as here
(model.conditioning 'none'); reconstruction guidance is config.sample.task / vdm_jax/tasks.py,
and `--mode eval` runs the 5 -> 11 protocol (config.eval.task='predict', below). Rows not
expressible here are listed in experiments/_video_diffusion_paper.py.
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
  # The paper's protocol (Table 3, after Luc et al. 2020): 5 frames given, 11 predicted, FVD of
  # 50,000 samples; here 10 repeats of 5,000 test clips continued by reconstruction guidance
  # (the split of 50,000 into clips x repeats is this config's), against those clips, with the
  # user's I3D weights: --mode eval --config.eval.i3d_weights=i3d.npz. Not run here.
  config.eval.task = 'predict'
  config.sample.num_known_frames = 5
  config.sample.conditioning_method = 'reconstruction'
  config.sample.reconstruction_weight = 9.0  # Appendix A, "Reconstruction guidance weight".
  config.eval.metrics = ('fvd_i3d',)
  config.eval.num_captions = 5_000
  config.eval.num_repeats = 10
  config.eval.fvd_num_reference = 5_000
  config.eval.bpd_num_videos = 0
  if variant == 'laptop':
    paper.shrink_for_laptop(config)
    config.sample.num_known_frames = 3  # 8 frames: 3 given, 5 predicted.
    config.eval.fvd_num_reference = config.eval.num_captions
  return config
