"""Base configuration: every field of every experiment, each with its meaning and allowed values.

Experiment files import `get_base_config()` and change a few fields. Fields are validated in one
place, `vdm_jax/config_validation.py`, before any work starts.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.seed = 0  # One PRNG key per run; every step folds in its step number.
  config.batch_size = 16  # Global training batch (all devices of all hosts); divisible by device count.

  # ---------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict()
  # Dataset: 'moving_shapes' or 'moving_digits' (built in, prepared locally), 'video_folder' (your videos,
  # see data.video_dir) or a TFDS video dataset name ('moving_mnist', 'ucf101', 'bair_robot_pushing_small',
  # ...; see vdm_jax/data/registry.py).
  config.data.name = 'moving_shapes'
  # moving_shapes: 'default' (16x32x32, 1 object), 'two_objects', 'res64', 'smoke';
  # moving_digits: 'default' (16x64x64, 1 digit), 'two_digits', 'smoke'; TFDS: a config name or 'default'.
  config.data.builder_config = 'default'
  config.data.data_dir = '~/tensorflow_datasets'  # Where TFDS datasets are prepared and read.
  config.data.manual_dir = ''  # TFDS: where manually downloaded files are ('' = <data_dir>/downloads/manual).
  # video_folder: a folder of .mp4/.webm/.avi/.gif files, captions in <stem>.txt or captions.jsonl.
  config.data.video_dir = ''
  config.data.test_fraction = 0.1  # video_folder: fraction of the videos (whole videos) in the test split, in [0, 1).
  # Clip shape of TFDS and video_folder datasets (built-in ones have their builder_config's).
  config.data.num_frames = 16  # TFDS, video_folder: frames per clip (> 0).
  # Built-in datasets: seen at 1/pool_factor of their resolution, each video average-pooled (the
  # base stage of a cascade; its super-resolution stage: train.cond_frames='low_res').
  config.data.pool_factor = 1
  config.data.resolution = 32  # TFDS, video_folder: shorter side resized to this, then center-cropped square (> 0).
  # Stored frames between two clip frames (1 = consecutive). Built-in datasets: every frame_skip-th
  # stored frame from frame 0 (it divides their frames; the base stage of a temporal cascade).
  config.data.frame_skip = 1
  config.data.random_clip_start = True  # TFDS: training clips start at a random frame (else at frame 0).
  config.data.random_flip = False  # TFDS: flip training clips left-right with probability 1/2 (used for BAIR).
  config.data.caption_template = 'a video of {label}'  # TFDS: caption of a labelled video ({label}: its class name).
  config.data.max_text_length = 64  # Caption length in tokens of model.text_tokenizer (longer prompts are refused).
  # Joint image-video training (Ho et al. 2022, sec. 4.3.1): K >= 0 independent images appended to
  # every training video, each a random frame of another video of the split (or an image of
  # data.image_dataset), under the video's caption; temporal layers keep each image to itself.
  # 0: videos only. Sampling is always T frames.
  config.data.num_images_per_video = 0
  # Where those images come from: '' (frames of other videos of the split, as the paper) or a TFDS
  # image dataset name (e.g. 'cifar10', 'imagenet_resized/64x64'), its split `image_split`, each image
  # made RGB, resized and center-cropped to the video's resolution (vdm_jax/data/image_dataset.py).
  config.data.image_dataset = ''
  config.data.image_split = 'train'

  # ---------------------------------------------------------------- model
  # The factorized space-time U-Net of Ho et al. 2022 (vdm_jax/models/unet.py).
  config.model = ml_collections.ConfigDict()
  config.model.channels = 64  # Channels at the highest resolution.
  config.model.channel_mult = (1, 2, 2)  # Channel multiplier per resolution level; each extra level halves H and W.
  config.model.num_res_blocks = 1  # Residual blocks per level (the up path has one more).
  config.model.attention_resolutions = (8,)  # Feature-map sizes (H / patch_size / 2^level) with space attention + time attention + text cross-attention.
  config.model.head_dim = 32  # Channels per attention head (heads = channels // head_dim).
  config.model.dropout = 0.0  # Dropout rate in residual blocks (training only).
  # Tokens of the built-in text encoder (vdm_jax/data/tokenizer.py): 'words' (one hashed id per word)
  # or 'bytes' (UTF-8 bytes: the encoder must learn to spell the words first).
  config.model.text_tokenizer = 'bytes'
  config.model.text_width = 128  # Width of the text encoder (a small Transformer over tokens).
  config.model.text_layers = 2  # Transformer layers of the text encoder.
  config.model.text_heads = 4  # Attention heads of the text encoder.
  config.model.temporal_rel_pos_buckets = 32  # Relative-position buckets of temporal attention (Shaw et al. 2018).
  config.model.temporal_rel_pos_max_distance = 64  # Frames beyond this distance share the last bucket.
  config.model.temporal_conv = False  # Add a 3x1x1 temporal conv to every residual block ((2+1)D, Imagen Video).
  config.model.frame_embedding = False  # Add an embedding of each frame's index after the first conv.
  config.model.coord_channels = False  # CoordConv: (frame, row, column) in [-1, 1] as 3 more input channels.
  # Add Fourier features of each position's (frame, row, column), read out with coefficients computed from
  # the noise level and text, after the first conv: the caption can say where and when content is
  # ("moving left": on the right in frame 0, on the left in the last).
  config.model.layout_embedding = False
  # 'sigma2': scaled by sigmoid(sharpness * (layout_embedding_gate_center - logsnr)) (sigma^2 for
  # center 0, sharpness 1), so that it acts at high noise only.
  config.model.layout_embedding_gate = 'none'
  config.model.layout_embedding_gate_center = 0.0
  config.model.layout_embedding_gate_sharpness = 1.0
  # Read the noise-level + text embedding through stop_gradient (its gradients train only itself).
  config.model.layout_embedding_detach = False
  # Its Fourier features: number of frequencies, and their scale (std of the trainable frequencies;
  # lower: smoother layouts).
  config.model.layout_embedding_frequencies = 64
  config.model.layout_embedding_scale = 3.0
  # A layout residual head at the output (models/unet.py): a gated (sigma^2) x-space correction
  # from Fourier features of (frame, row, column) read out by the noise level and text, trained on
  # what the network leaves, so the network itself trains as without it. Its Fourier scale.
  config.model.layout_head = False
  config.model.layout_head_scale = 1.0
  config.model.patch_size = 1  # Space-to-depth of p x p pixels around the U-Net (p^2 cheaper convs; output stays full-res).
  # How 3x3 convs are computed (same results): 'auto' (CPU: 'winograd', else 'xla'), 'xla' (lax.conv),
  # 'matmul_grad' (lax.conv, kernel gradient as im2col matmuls), 'im2col' (shifted copies + matmul),
  # 'im2col_chunks' (every pass an im2col matmul over cache-sized chunks of frames) or 'winograd'
  # (stride-1 convs as Winograd F(4x4, 3x3) / F(2x2, 3x3) matmuls over chunks of frames).
  config.model.conv_impl = 'auto'
  # How attention is computed (same results): 'auto' (CPU: 'chunked'; GPU: 'cudnn' where it applies,
  # else 'dot_product_attention'), 'cudnn' (cuDNN's flash attention: GPUs, model.dtype bfloat16),
  # 'dot_product_attention' (jax.nn.dot_product_attention, XLA's implementation),
  # 'chunked' (the same a cache-sized chunk of rows at a time, recomputed in the backward pass) or
  # 'einsum' (the maths written out, for checking).
  config.model.attention_impl = 'auto'
  # Rematerialisation: 'none', 'block' (each residual/attention block keeps only its inputs and is
  # recomputed in the backward pass: about half the activation memory) or 'full' (the whole U-Net);
  # same gradients, more FLOPs; measured in benchmarks/remat_memory.py and benchmarks/train_step.py.
  config.model.remat = 'none'
  config.model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16' (norms, softmax, loss stay float32).
  config.model.param_dtype = 'float32'  # Parameter dtype: 'float32' or 'bfloat16'.
  config.model.cond_drop_prob = 0.1  # Probability of replacing the text (class) by the null embedding (classifier-free guidance).
  # What the model is conditioned on (vdm_jax/conditioning.py): 'text' (captions), 'class' (the dataset's class
  # label: TFDS datasets with a class-label feature, or single-object moving_shapes, whose 168 classes are its
  # captions) or 'none' (unconditional: no guidance). Sampling prompts of 'class' are class indices ('3') or
  # names ('a red circle moving left'; TFDS: 'ApplyEyeMakeup', 'apply eye makeup' or its caption); of 'none', any.
  config.model.conditioning = 'text'
  config.model.num_classes = 0  # 'class': number of classes of the dataset (> 0); labels in [0, num_classes).
  # 'text': 'builtin' (the small byte-token Transformer, trained with the model) or 'precomputed' (frozen
  # embeddings of any encoder, e.g. T5, read from the dataset: a float32 TFDS feature 'text_embedding' [L, D],
  # or text_embeddings.npz in data.video_dir; sampling prompts from sample.prompt_embeddings).
  config.model.text_encoder = 'builtin'
  config.model.text_embedding_dim = 0  # 'precomputed': D of the dataset's text embeddings (> 0).
  # Width of the conditioning embedding (noise level + text/class, FiLM in every residual block); 0: 4 * channels.
  config.model.cond_embedding_dim = 0
  config.model.cond_mlp_layers = 2  # Dense layers of the noise-level embedding MLP (>= 1; Ho et al. 2022: 2 or 4).
  # Frame conditioning (Ho et al. 2022; Imagen Video): given frames, noise-augmented, and a 0/1 mask channel
  # concatenated to the input; train.cond_frames says which frames are given, the loss covers the others.
  config.model.frame_conditioning = False

  # ---------------------------------------------------------------- diffusion
  config.diffusion = ml_collections.ConfigDict()
  # Log-SNR schedule: 'cosine' (clipped), 'linear' (DDPM discrete linear betas), 'betas' (discrete,
  # from diffusion.betas) or 'learned' (VDM's monotone network, trained to lower the VLB's variance).
  config.diffusion.schedule = 'cosine'
  config.diffusion.logsnr_min = -20.0  # Cosine and learned schedules: log-SNR at t = 1.
  config.diffusion.logsnr_max = 20.0  # Cosine and learned schedules: log-SNR at t = 0.
  # Cosine schedule: log-SNR added at every t, endpoints kept (Hoogeboom et al. 2023 use
  # 2 log(64 / resolution)); negative = noisier, for training and sampling alike.
  config.diffusion.logsnr_shift = 0.0
  # > 0: the shift is derived from the data instead, 2 log(base / data.resolution) (simple
  # diffusion's rule, its base 64); logsnr_shift must then be 0.
  config.diffusion.logsnr_shift_base_resolution = 0
  config.diffusion.linear_num_steps = 1000  # Linear schedule: number of discrete steps T.
  config.diffusion.linear_beta_start = 1e-4  # Linear schedule: beta_1.
  config.diffusion.linear_beta_end = 0.02  # Linear schedule: beta_T.
  config.diffusion.betas = ()  # 'betas' schedule: beta_1..beta_T, each in (0, 1) (T >= 1).
  # Cosine, linear, betas: rescale to SNR 0 at t = 1 (Lin et al. 2023; log-SNR clamped to -30).
  config.diffusion.zero_terminal_snr = False
  config.diffusion.learned_num_features = 1024  # Learned schedule: hidden units of its monotone MLP (> 0).
  # Learned schedule: also learn its endpoints lambda(0), lambda(1) (from logsnr_max, logsnr_min) on the
  # whole VLB (prior KL + diffusion + 8-bit reconstruction, as VDM); False: the configured ones.
  config.diffusion.learn_endpoints = False
  config.diffusion.parameterization = 'eps'  # Network target: 'eps', 'x' or 'v' (Salimans & Ho 2022).
  # Weight w(lambda) of the x-space error w ||x - x_hat||^2: 'eps_mse' (SNR, the MSE on eps),
  # 'v_mse' (SNR + 1, the MSE on v), 'x_mse' (1), 'snr_trunc' (max(SNR, 1)), 'min_snr' (min(SNR, gamma)),
  # 'vlb' (-1/2 dlambda/dt SNR: the VDM continuous-time VLB; required by the learned schedule).
  config.diffusion.loss_weighting = 'eps_mse'
  config.diffusion.min_snr_gamma = 5.0  # gamma of 'min_snr' (Hang et al. 2023 use 5); > 0.
  config.diffusion.antithetic_time_sampling = False  # t_i = mod(u + i / B, 1) over the batch (VDM) instead of i.i.d.
  # Where training draws t: 'uniform' (t ~ U[0, 1]) or 'logit_normal' (t = sigmoid(m + s n), Esser et al.
  # 2024; m > 0: more of each batch at high noise). Sampling grids are not affected; p(t) multiplies the
  # loss weighting, so 'vlb' (and the learned schedule) needs 'uniform'.
  config.diffusion.train_time_distribution = 'uniform'
  config.diffusion.train_time_logit_mean = 0.0  # m of 'logit_normal'.
  config.diffusion.train_time_logit_std = 1.0  # s of 'logit_normal' (> 0).
  # 'logit_normal': the fraction of each batch that keeps uniform t, so every level stays trained, in [0, 1].
  config.diffusion.train_time_uniform_fraction = 0.0
  # How the noise is correlated across frames (vdm_jax/noise_prior.py; Ge et al. 2023, PYoCo):
  # 'independent' (the usual), 'mixed' (a noise image shared by all frames plus one per frame) or
  # 'progressive' (each frame's noise continues the previous one's). It defines the model: training,
  # sampling and the bound all use it.
  config.diffusion.noise_prior = 'independent'
  config.diffusion.noise_prior_alpha = 1.0  # alpha of 'mixed'/'progressive' (> 0): shared / own noise scale.

  # ---------------------------------------------------------------- optimizer
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 2e-4  # Peak AdamW learning rate (> 0).
  config.optim.warmup_steps = 200  # Linear warm-up steps from 0 to the peak rate (0: the peak from step 0).
  config.optim.lr_schedule = 'cosine'  # After warm-up: 'constant', or 'cosine' decay over train.num_steps.
  config.optim.final_lr_fraction = 0.1  # Cosine schedule: final rate as a fraction of the peak.
  config.optim.weight_decay = 0.0  # AdamW decoupled weight decay.
  config.optim.b1 = 0.9  # Adam beta1.
  config.optim.b2 = 0.99  # Adam beta2.
  config.optim.grad_clip_norm = 1.0  # Clip the global gradient norm to this (0 disables).
  # Top-level parameter names to train (comma-separated, e.g. 'layout_head'; '' trains all): the
  # others stay as they are (fine-tuning a part of a model restored by train.init_from).
  config.optim.trainable = ''
  config.optim.ema_decay = 0.999  # EMA of parameters (sampling uses the EMA); warmed up as min(decay, (1+s)/(10+s)).

  # ---------------------------------------------------------------- training
  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 2000  # Total training steps.
  # A workdir whose latest checkpoint initialises a new run (fine-tuning; '' : from scratch): its
  # EMA parameters become the new run's parameters and EMA wherever the names match (the rest,
  # e.g. a new layout_head, are freshly initialised); optimizer, step and data start afresh. Its
  # model must be this config's, but for the added modules. Ignored when the workdir resumes.
  config.train.init_from = ''
  # Gradient accumulation: each step's batch is split into this many microbatches whose gradients are
  # summed in one compiled step (same update, ~1/k the activation memory; batch_size divisible by k x devices).
  config.train.grad_accum_steps = 1
  # XLA:CPU only: let YNNPACK compute the train step's reductions (XLA's default, the faster).
  # False keeps them in XLA's own fusions, which do not write out the broadcasts a GroupNorm feeds
  # them: less memory, slower (benchmark config S: peak 8.4 -> 7.0 GiB, 18.8 -> 21.7 s per step;
  # the default experiment ~10% slower). See vdm_jax/xla_options.py. Ignored on GPU and TPU.
  config.train.cpu_ynn_reductions = True
  config.train.log_every = 25  # Steps between logged metrics (TensorBoard + console).
  config.train.checkpoint_every = 250  # Steps between checkpoints (and one at the end).
  config.train.keep_checkpoints = 3  # Number of most recent checkpoints kept.
  # Also keep every checkpoint whose step is a multiple of this (0: none), beyond keep_checkpoints.
  config.train.keep_checkpoints_every = 0
  # Steps whose loss or gradients are not finite are skipped (params, EMA, optimizer unchanged);
  # this many in a row stop the run, with the last checkpoint intact.
  config.train.max_consecutive_skips = 10
  config.train.sample_every = 1000  # Steps between sample videos of `sample.prompts` (0: only at the end).
  config.train.sample_at_end = True  # Write sample videos of `sample.prompts` after the last step.
  config.train.eval_every = 0  # Steps between evaluations during training (0: none before the end).
  config.train.eval_at_end = True  # Run the evaluation (`eval.*`) after the last step and print its table.
  # Frame conditioning (model.frame_conditioning): which frames are given in training: 'first' (frames
  # 0..k-1: video prediction) or 'random' (k random frames per video); sample.task='generate' gives the first k,
  # the other tasks (vdm_jax/tasks.py) the frames they know that the model was trained to take.
  # 'low_res': every frame, average-pooled by cond_low_res_factor (a spatial super-resolution stage).
  # 'low_frame_rate': every cond_frame_stride-th frame (a temporal super-resolution stage).
  config.train.cond_frames = 'first'
  config.train.num_cond_frames = 1  # k, frames given, in [1, frames).
  # 'first' / 'random': probability that a training video is given no frames at all (masked conditional
  # training, Voleti et al. 2022): the model then also generates from text alone, e.g. a long video's first block.
  config.train.cond_drop_prob = 0.0
  config.train.cond_low_res_factor = 2  # 'low_res': the given video's resolution is 1/this (> 1, divides it).
  # 'low_frame_rate': frames 0, s, 2s, ... given, s = this (> 1, divides the frames; a temporal
  # super-resolution stage: it raises the frame rate s-fold).
  config.train.cond_frame_stride = 2
  # Noise conditioning augmentation: given frames noised to a log-SNR drawn uniformly from [min, max] per video.
  config.train.cond_aug_logsnr_min = 3.0
  config.train.cond_aug_logsnr_max = 20.0  # >= cond_aug_logsnr_min (both equal: a fixed level).

  # ---------------------------------------------------------------- sampling
  config.sample = ml_collections.ConfigDict()
  # 'ddim', 'ancestral', 'pc' (ancestral + Langevin corrector, Ho et al. 2022), 'dpmpp_2m'
  # (DPM-Solver++(2M), Lu et al. 2022) or 'heun' (Karras et al. 2022); see vdm_jax/samplers.py.
  config.sample.sampler = 'ddim'
  config.sample.num_steps = 50  # Grid points; network evaluations: 2 * num_steps - 1 for 'pc' and 'heun', else num_steps.
  # Where the steps go: 'default' ('karras' for heun, else 'uniform_t'), 'uniform_t', 'trailing'
  # (Lin et al. 2023; the same grid as 'uniform_t' in continuous time), 'uniform_logsnr', 'karras' (EDM, rho = 7).
  config.sample.time_spacing = 'default'
  config.sample.dynamic_threshold = 0.0  # Dynamic thresholding percentile p in (0, 1] (Saharia et al. 2022), e.g. 0.995; 0: clip to [-1, 1].
  config.sample.guidance_weight = 1.0  # Classifier-free guidance w: eps = (1 + w) eps_cond - w eps_uncond (>= 0).
  config.sample.eta = 0.0  # DDIM stochasticity (0: deterministic DDIM, 1: DDPM-like).
  config.sample.gamma = 0.3  # Ancestral (and pc) variance interpolation (Ho et al. 2022): 0 = posterior variance.
  config.sample.seed = 0  # Seed of the sampling noise.
  config.sample.batch_size = 16  # Videos per compiled sampling call (padded; one compilation serves all uses).
  config.sample.num_videos = 2  # Videos per prompt in --mode sample (task 'extend': videos of the story).
  config.sample.fps = 8  # Frames per second of the written GIF/MP4.
  # A high-noise expert (vdm_jax/experts.py; eDiff-I, Balaji et al. 2022): the workdir of a second
  # trained run, on the same data and inputs, that denoises the steps with log-SNR below
  # expert_logsnr_below ('': none). expert_step: its checkpoint (0: the latest).
  config.sample.expert_workdir = ''
  config.sample.expert_logsnr_below = -3.0
  config.sample.expert_step = 0
  # A cascade (vdm_jax/cascade.py; Imagen Video): the workdirs of super-resolution stages (runs with
  # train.cond_frames='low_res': spatial, or 'low_frame_rate': temporal), in order, each given the
  # videos of the one before (): none).
  config.sample.cascade_workdirs = ()
  # --mode sample task (vdm_jax/tasks.py): 'generate' (text-to-video from noise), 'predict' (test clips from
  # their first num_known_frames), 'extend' (one long video per story of prompts, block by block),
  # 'interpolate' (double the frame rate of test clips), 'super_resolve' (test clips from their downsampled
  # version), 'inpaint' (test clips with a centre square hidden).
  config.sample.task = 'generate'
  # Conditional tasks: 'reconstruction' (reconstruction guidance, Ho et al. 2022 eq. 7) or 'replacement'
  # (Song et al. 2021, the paper's baseline); see vdm_jax/guidance.py.
  config.sample.conditioning_method = 'reconstruction'
  config.sample.reconstruction_weight = 5.0  # w_r of reconstruction guidance (>= 0; 0: the observation imposed only).
  config.sample.num_known_frames = 4  # predict: frames given; extend: frames each block carries over; in [1, frames).
  config.sample.extend_frames = 64  # extend: frames of each long video (>= the model's frames).
  config.sample.super_resolution_factor = 2  # super_resolve: average-pooling factor of the given video (> 1, divides the resolution).
  config.sample.inpaint_fraction = 0.5  # inpaint: side of the hidden centre square, as a fraction of the frame's, in (0, 1).
  config.sample.num_clips = 4  # predict / interpolate / super_resolve / inpaint: clips of eval.split conditioned on (> 0).
  config.sample.cond_aug_logsnr = 10.0  # Frame conditioning: log-SNR the given frames are noised to at sampling.
  # model.text_encoder 'precomputed': .npz of the prompts' embeddings: prompts [N] (str), text_embedding [N, L, D]
  # and optionally text_embedding_mask [N, L], from the encoder of the training data.
  config.sample.prompt_embeddings = ''
  config.sample.prompts = (  # Default prompts; `launch.py --prompt` replaces them.
      'a red circle moving left',
      'a green square moving up',
      'a blue triangle moving down-right',
      'a yellow circle moving up-left',
  )

  # ---------------------------------------------------------------- evaluation
  config.eval = ml_collections.ConfigDict()
  config.eval.num_captions = 64  # Test-split captions to sample one video each for (caption adherence).
  config.eval.split = 'test'  # Dataset split whose captions are used.
  config.eval.bpd_num_videos = 64  # Videos of eval.split whose VLB (bits/dim, given the caption) is estimated (0: none).
  config.eval.bpd_num_t = 4  # Antithetic t samples per video of the VLB's diffusion term (> 0).
  # Log-SNRs at which the bound is also reported with the chain stopped there and the decoder
  # reading z (likelihood.vlb's decoder_logsnr; each a valid bound, often tighter than at the
  # schedule's lambda(0) = 20 on 8-bit data), e.g. (13.0, 10.0).
  config.eval.bpd_decoder_logsnrs = ()
  # Times the eval.num_captions videos are sampled, each from its own seed (derived from eval.seed):
  # adherence, FVDs, FID, IS and digit accuracy are means over repeats, with <name>_std (BAIR's protocol: 100 x 256).
  config.eval.num_repeats = 1
  config.eval.seed = 0  # Seed of the evaluation's sampling noise (repeat r > 0 folds in r).
  # What evaluation samples: 'generate' (one video per caption from noise; a frame-conditioned model is given
  # the true video's first train.num_cond_frames frames) or a conditional task of vdm_jax/tasks.py on the
  # true video of each caption ('predict', 'interpolate', 'super_resolve', 'inpaint'; settings from
  # config.sample: num_known_frames, conditioning_method, ...), e.g. Kinetics-600's 5 -> 11 protocol:
  # --config.eval.task=predict --config.sample.num_known_frames=5.
  config.eval.task = 'generate'
  # What --mode eval (and evaluation during training) computes, any of: 'adherence' (caption adherence
  # of eval.num_captions generated videos, the tracker; moving_shapes), 'bpd' (bits/dim), 'fvd_learned'
  # (Frechet distance on the features of the classifier in eval.classifier_workdir), 'fvd_i3d' (FVD with
  # the I3D weights in eval.i3d_weights), 'digit_accuracy' (moving_digits: fraction of the generated
  # videos in which the classifier in eval.classifier_workdir finds the caption's digits and no other;
  # the true videos' fraction is its ceiling), 'fid_frames' (FID of eval.frames_per_video frames of each
  # generated video vs those of the eval.fvd_num_reference test videos; Inception-v3 of
  # eval.inception_weights), 'is_frames' (Inception Score of the generated frames; the true videos'
  # is its ceiling), 'fid_c3d' and 'is_c3d' (FID and IS of whole 16-frame videos by the C3D of
  # eval.c3d_weights: UCF-101's protocol). All use the same generated videos; FVDs and FIDs the test split.
  config.eval.metrics = ('adherence', 'bpd')
  config.eval.fvd_num_reference = 1000  # FVDs, FIDs: videos of eval.split the generated ones are compared with (>= 2).
  # fvd_learned, digit_accuracy: workdir of a trained caption classifier (python -m
  # vdm_jax.metrics.train_classifier; moving_digits: --config experiments/digit_classifier.py).
  config.eval.classifier_workdir = ''
  config.eval.i3d_weights = ''  # fvd_i3d: .npz written by python -m vdm_jax.metrics.convert_i3d.
  # fid_frames, is_frames: .npz written by python -m vdm_jax.metrics.convert_inception.
  config.eval.inception_weights = ''
  # fid_frames, is_frames: frames per video, evenly spaced from first to last (0: every frame; <= frames).
  config.eval.frames_per_video = 4
  config.eval.is_splits = 10  # is_frames, is_c3d: splits of the frames or videos; IS is the mean (and std) over them (> 0).
  # fid_c3d, is_c3d: .npz written by python -m vdm_jax.metrics.convert_c3d (TGANv2's UCF-101 C3D).
  config.eval.c3d_weights = ''

  # ---------------------------------------------------------------- caption classifier
  # The small video classifier behind 'fvd_learned' and 'digit_accuracy' (vdm_jax/metrics/video_classifier.py),
  # trained on config.data (single-object moving_shapes, or moving_digits) by
  # python -m vdm_jax.metrics.train_classifier.
  config.classifier = ml_collections.ConfigDict()
  config.classifier.widths = (16, 32, 64)  # Channels of its (2+1)D conv levels (each halves H, W; all but the first T).
  config.classifier.feature_dim = 64  # Width of the penultimate layer: the features of fvd_learned (> 0).
  config.classifier.time_conv = True  # A 3-tap temporal conv after each level's spatial one (False: frames read alone).
  # Last feature maps -> one vector: 'mean' over time and space, or 'max' over space then mean over time.
  config.classifier.pool = 'mean'
  config.classifier.batch_size = 32  # Training videos per step (> 0).
  config.classifier.num_steps = 1000  # Adam steps (> 0).
  config.classifier.learning_rate = 2e-3  # Adam learning rate, cosine-decayed to 0 (> 0).
  config.classifier.log_every = 100  # Steps between logged training losses (> 0).
  config.classifier.eval_videos = 1000  # Test-split videos its accuracy is measured on (> 0).

  # ---------------------------------------------------------------- devices
  config.mesh = ml_collections.ConfigDict()
  # Mesh ('data', 'fsdp') over every device of every host (vdm_jax/mesh.py); batches split over both.
  config.mesh.data = -1  # Size of the 'data' axis; -1 = the rest: device count / mesh.fsdp.
  # Size of the 'fsdp' axis: params, EMA and optimizer state split over it (fully sharded data
  # parallelism, for models that do not fit one device); 1 = replicated; must divide the device count.
  config.mesh.fsdp = 1
  config.mesh.fsdp_min_mib = 1.0  # FSDP: arrays smaller than this (MiB) stay replicated (biases, norms); >= 0.
  # CPU only: devices per process (vdm_jax/cpu_devices.py); 0 = one per core, as many as the
  # batches split over (a data-parallel step on 2 cores is ~1.2x faster than one device's).
  config.mesh.cpu_devices = 0

  return config
