"""Text-to-video at 16x64x64, with Ho et al. 2022 ("Video Diffusion Models") Appendix A,
"Text-to-video": the small 16x64x64 model by default, `:large` the large 16x64x64 model.

  python launch.py --config experiments/text_to_video.py --workdir runs/t2v --mode inspect
  python launch.py --config experiments/text_to_video.py --workdir runs/t2v \
      --config.data.video_dir=/path/to/captioned/videos
  python launch.py --config experiments/text_to_video.py:laptop --workdir runs/t2v_laptop

The paper's 10M captioned videos are not public: the data are your own captioned videos through
`video_folder` (README, Data). The paper's small model trained with 0, 4 or 8 extra images per
video (Table 4: FVD 202 -> 68 -> 58); both models here append 8 (the ablation:
--config.data.num_images_per_video=0 or 4; `:laptop` appends 4). The 9x128x128 model of the
table (head dimension 128) is not included. Rows not expressible here are listed in
experiments/_video_diffusion_paper.py. `:laptop` trains on the built-in moving_shapes dataset
(no download) with the paper's training settings on a CPU-sized model; nothing measured yet.
"""

from experiments import _video_diffusion_paper as paper


def get_config(variant: str = ''):
  if variant not in ('', 'large', 'laptop'):
    raise ValueError(f"Unknown variant {variant!r} of experiments/text_to_video.py; allowed: "
                     "'', 'large' or 'laptop'.")
  large = variant == 'large'
  config = paper.get_paper_config(
      channels=256 if large else 128, channel_mult=(1, 2, 4, 8), num_res_blocks=2,
      learning_rate=3e-4, b2=0.99, batch_size=128, ema_decay=0.9999, dropout=0.0,
      weight_decay=0.0, num_steps=700_000 if large else 200_000, sampler='ancestral',
      sample_steps=256, gamma=0.3, parameterization='eps',
      images_per_video=8)  # The small model's ablation (Table 4) also ran 0 and 4.
  # The large model trained on frame skips 1 and 4 mixed; one frame skip here.
  config.data.name = 'video_folder'
  config.data.video_dir = ''  # Set on the command line: --config.data.video_dir=...
  config.data.test_fraction = 0.01  # Not from the paper.
  config.model.text_width = 256  # Not from the paper (frozen BERT-large there).
  config.model.text_layers = 4
  config.sample.guidance_weight = 3.0  # Not in Appendix A (guidance weights are compared in sec. 4.4).
  if variant == 'laptop':
    paper.shrink_for_laptop(config)
    config.data.name = 'moving_shapes'  # 16x32x32 shapes with checkable captions, no download.
    config.data.builder_config = 'default'
    config.model.patch_size = 2
    config.model.attention_resolutions = (8,)
    config.train.eval_at_end = True
    config.eval.num_captions = 16
  return config
