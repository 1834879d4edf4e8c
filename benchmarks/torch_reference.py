"""PyTorch reference for benchmarks/train_step.py: the training step of Hugging Face diffusers'
UNet3DConditionModel at our parameter count, layout and input (issue 8).

torch is not a dependency of this project, so the reference runs in its own virtualenv, created on
first use by `run_reference` (torch==TORCH_VERSION from /opt/wheels or PyPI, diffusers==
DIFFUSERS_VERSION from PyPI; nothing else is pinned), which then runs this file with that venv's
python and returns its JSON. Nothing at module level imports torch, so the main venv can import
this file.

Layout mapping, ours -> diffusers (diffusers' down_block_types[i] works at size / 2^i, the last
has no downsampler; up_block_types run from the lowest resolution up):
  base channels x channel_mult       -> block_out_channels = (c * m for m in channel_mult)
  1 residual block per level (down)  -> layers_per_block = 1 (both up paths have one more)
  attention at 16x16 and 8x8         -> CrossAttn{Down,Up}Block3D there, {Down,Up}Block3D elsewhere
  middle: res, attention, res        -> UNetMidBlock3DCrossAttn (always there)
  byte-token text, width 128         -> encoder_hidden_states [B, text_length, text_dim] (random:
                                        our text encoder's cost is not part of the reference)
  GroupNorm groups: largest <= 32 dividing the channels (layers.num_groups) -> norm_num_groups
diffusers' blocks are heavier per channel than ours (each resnet has a 4-conv temporal layer, each
attention level a spatial and a temporal transformer with GEGLU MLPs, plus `transformer_in` after
conv_in), so c is searched to match the parameter count: even c within ~20% of the quadratic
estimate, head dims dividing every attention level's channels within 2x of ours (32). Among the
candidates within 10% of the target, the head dim nearest ours wins, then the nearest count
(layers_per_block 2 only if 1 gets nowhere within 10%; --head_dim pins it).

Why the head dim comes first: in diffusers 0.42, UNet3DConditionModel's `attention_head_dim` is
the head dimension of the blocks' transformers (heads = channels // it), but `transformer_in`
(a temporal transformer at full resolution) gets 8 heads of that dimension whatever c is: at our
small c it is 3-8x wider than the features, and its MLPs dominate the step. For S, c 42 with head
dim 42 hits 14.48M (+1.2%) but costs 2.94 TFLOP per step, 62% of the forward in transformer_in;
head dim 28 (13.21M, -7.6%, the pick) costs 1.94, head dim 22 (c 44, 14.00M) 1.74. Mirroring
our head dim keeps the reference from being handicapped by this quirk more than it must be.

  python benchmarks/torch_reference.py --config S        # from the main venv: creates
                                                         # .venv_torch_bench, prints a table
  python benchmarks/torch_reference.py --config M --params_only

Inside the torch venv (what run_reference runs), it prints only the JSON (or writes --json_out).
Steps: AdamW(lr 1e-4), MSE of the prediction against fixed noise, model.train(); 2 warm-up steps,
then the median and min of --steps timed steps. FLOPs: torch's FlopCounterMode over forward +
backward of the same model on the meta device (shape formulas, no compute; null if that fails).
Sampler: median of --sample_calls forwards at batch 2B under inference_mode (one classifier-free
guidance step). peak_rss_gib: ru_maxrss right after the timed training steps.

Measured figures, side by side with ours: README (Speed) and benchmarks/train_step.json.
"""

import argparse
import collections
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TORCH_VERSION = '2.13.0'
DIFFUSERS_VERSION = '0.42.1'  # Newest on 2026-12-01; imports and trains with torch 2.13 on 3.11.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VENV = os.path.join(REPO, '.venv_torch_bench')  # git-ignored.
_CHILD_ENV = 'VDM_TORCH_REFERENCE_CHILD'  # Set in the venv subprocess: never re-exec from there.

# Ours (train_step.py's S and M): the layout to mirror and the default input.
CONFIGS = {
    'S': dict(batch=8, frames=16, size=32, channel_mult=(1, 2, 4), attention_resolutions=(16, 8),
              target_params=14_300_000),
    'M': dict(batch=4, frames=16, size=64, channel_mult=(1, 2, 4, 8),
              attention_resolutions=(16, 8), target_params=45_700_000),
}
OUR_HEAD_DIM = 32
PARAM_TOLERANCE = 0.1


def log(*args):
  print(*args, file=sys.stderr, flush=True)


def _run_logged(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
  """Runs cmd capturing its output; RuntimeError with the output's tail if it fails."""
  result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
  if result.returncode:
    tail = ' | '.join((result.stderr or result.stdout).strip().splitlines()[-3:])
    raise RuntimeError(f'{what} failed (exit {result.returncode}): {tail}')
  return result


def ensure_venv(venv_dir: str) -> str:
  """The venv's python, after creating the venv / installing torch and diffusers if needed."""
  python = os.path.join(venv_dir, 'bin', 'python')
  if not os.path.exists(python):
    log(f'creating virtualenv {venv_dir}')
    _run_logged([sys.executable, '-m', 'venv', venv_dir], 'python -m venv')
  check = ('import torch, diffusers; '
           'print(torch.__version__.split("+")[0], diffusers.__version__)')
  installed = subprocess.run([python, '-c', check], capture_output=True, text=True)
  if installed.stdout.split() == [TORCH_VERSION, DIFFUSERS_VERSION]:
    return python
  # torch comes from PIP_FIND_LINKS=/opt/wheels (CPU wheel) when there, else from PyPI.
  cmd = [python, '-m', 'pip', 'install', f'torch=={TORCH_VERSION}',
         f'diffusers=={DIFFUSERS_VERSION}']
  log(f'installing into {venv_dir}: {" ".join(cmd[3:])} (a minute or more)')
  start = time.perf_counter()
  _run_logged(cmd, 'pip install')
  log(f'installed in {time.perf_counter() - start:.0f} s')
  return python


def run_reference(*, venv_dir: str, config_name: str, batch: int, frames: int, size: int,
                  target_params: int, text_length: int, text_dim: int, steps: int, threads: int,
                  timeout_s: float, head_dim: int | None = None,
                  params_only: bool = False) -> dict:
  """Runs the diffusers reference in the torch venv (created if missing); returns its JSON dict.

  timeout_s bounds the benchmark run, not the one-off installation.
  """
  python = ensure_venv(venv_dir)
  with tempfile.TemporaryDirectory() as tmp:
    json_path = os.path.join(tmp, 'reference.json')
    cmd = [python, os.path.abspath(__file__), '--config', config_name, '--batch', str(batch),
           '--frames', str(frames), '--size', str(size), '--target_params', str(target_params),
           '--text_length', str(text_length), '--text_dim', str(text_dim), '--steps', str(steps),
           '--threads', str(threads), '--json_out', json_path] + ['--params_only'] * params_only
    cmd += ['--head_dim', str(head_dim)] if head_dim else []
    env = dict(os.environ, **{_CHILD_ENV: '1', 'OMP_NUM_THREADS': str(threads),
                              'HF_HUB_OFFLINE': '1'})
    env.pop('PYTHONPATH', None)  # The main venv's packages must not shadow the torch venv's.
    log(f'diffusers reference, config {config_name}: {" ".join(cmd[1:])}')
    process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    tail = collections.deque(maxlen=3)

    def relay():  # Live progress on our stderr; the tail goes into the error message.
      for line in process.stdout:
        tail.append(line.strip())
        log(f'  [torch] {line.rstrip()}')

    relayer = threading.Thread(target=relay, daemon=True)
    relayer.start()
    try:
      process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
      raise RuntimeError(f'diffusers reference (config {config_name}) timed out after '
                         f'{timeout_s:.0f} s: {" | ".join(tail)}') from None
    relayer.join(timeout=10)
    if process.returncode or not os.path.exists(json_path):
      raise RuntimeError(f'diffusers reference (config {config_name}) failed (exit '
                         f'{process.returncode}): {" | ".join(tail) or "(no output)"}')
    with open(json_path) as f:
      return json.load(f)


# ----------------------------------------------------------------- inside the torch venv only.


def num_groups(channels: int, max_groups: int = 32) -> int:
  """As vdm_jax.models.layers.num_groups (not imported: this venv has no JAX)."""
  return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def block_types(size: int, channel_mult, attention_resolutions) -> tuple[tuple, tuple]:
  down = tuple('CrossAttnDownBlock3D' if size // 2**i in attention_resolutions else 'DownBlock3D'
               for i in range(len(channel_mult)))
  up = tuple(b.replace('Down', 'Up') for b in reversed(down))
  return down, up


def architecture(c: int, layers: int, head_dim: int, *, size: int, channel_mult,
                 attention_resolutions, text_dim: int) -> dict:
  """UNet3DConditionModel kwargs."""
  down, up = block_types(size, channel_mult, attention_resolutions)
  return dict(sample_size=size, in_channels=3, out_channels=3,
              block_out_channels=tuple(c * m for m in channel_mult), layers_per_block=layers,
              down_block_types=down, up_block_types=up, cross_attention_dim=text_dim,
              attention_head_dim=head_dim, norm_num_groups=num_groups(c))


def count_params(arch: dict) -> int:
  import diffusers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  with torch.device('meta'):  # Shapes only: no allocation or init, ~0.1 s per candidate.
    unet = diffusers.UNet3DConditionModel(**arch)
  return sum(p.numel() for p in unet.parameters())


def match_architecture(*, target_params: int, head_dim: int | None = None,
                       **layout) -> tuple[dict, int]:
  """(kwargs, params) of the best candidate (see the module docstring)."""
  head_dims = [head_dim] if head_dim else range(OUR_HEAD_DIM // 2, 2 * OUR_HEAD_DIM + 1)
  best = None
  for layers in (1, 2):
    probe = count_params(architecture(64, layers, head_dim or OUR_HEAD_DIM, **layout))
    c0 = 64 * math.sqrt(target_params / probe)  # Parameters grow ~quadratically with c.
    down, _ = block_types(layout['size'], layout['channel_mult'], layout['attention_resolutions'])
    attn_mults = [m for m, b in zip(layout['channel_mult'], down) if 'Attn' in b]
    attn_mults.append(layout['channel_mult'][-1])  # The mid block attends too.
    for c in range(max(8, 2 * round(0.4 * c0)), 2 * round(0.6 * c0) + 1, 2):  # Even, c0 +-20%.
      divisor = math.gcd(*(c * m for m in attn_mults))
      for h in head_dims:
        if divisor % h:
          continue
        arch = architecture(c, layers, h, **layout)
        params = count_params(arch)
        err = abs(params / target_params - 1)
        score = (err > PARAM_TOLERANCE, abs(math.log2(h / OUR_HEAD_DIM)), err)
        if best is None or score < best[0]:
          best = (score, arch, params)
    if best and not best[0][0]:
      break
  if best is None:
    raise ValueError(f'no candidate: head_dim {head_dim} divides no attention level\'s channels')
  return best[1], best[2]


def benchmark(args) -> dict:
  import diffusers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  config = CONFIGS[args.config]
  layout = dict(size=args.size, channel_mult=config['channel_mult'],
                attention_resolutions=config['attention_resolutions'], text_dim=args.text_dim)
  start = time.perf_counter()
  arch, params = match_architecture(target_params=args.target_params, head_dim=args.head_dim,
                                    **layout)
  search_s = time.perf_counter() - start
  log(f'architecture ({search_s:.1f} s search): {arch}, {params / 1e6:.2f}M parameters '
      f'(target {args.target_params / 1e6:.2f}M)')
  result = dict(config=args.config, framework='diffusers', torch=torch.__version__,
                diffusers=diffusers.__version__, threads=torch.get_num_threads(),
                batch=args.batch, video_shape=[args.frames, args.size, args.size, 3],
                text_length=args.text_length, text_dim=args.text_dim,
                target_params=args.target_params, params=params,
                params_rel_err=params / args.target_params - 1,
                architecture={k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
                search_s=search_s)
  start = time.perf_counter()
  unet = diffusers.UNet3DConditionModel(**arch)
  result['build_s'] = time.perf_counter() - start
  assert sum(p.numel() for p in unet.parameters()) == params
  if args.params_only:
    return result

  B = args.batch
  x_t = torch.randn(B, 3, args.frames, args.size, args.size)
  noise = torch.randn_like(x_t)
  t = torch.randint(0, 1000, (B,))
  text = torch.randn(B, args.text_length, args.text_dim)
  optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
  unet.train()

  def train_step() -> float:
    pred = unet(x_t, t, encoder_hidden_states=text).sample
    loss = torch.nn.functional.mse_loss(pred, noise)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()

  for i in range(args.warmup):
    start = time.perf_counter()
    loss = train_step()
    log(f'warm-up step {i}: {time.perf_counter() - start:.2f} s, loss {loss:.4f}')
  times = []
  for i in range(args.steps):
    start = time.perf_counter()
    loss = train_step()
    times.append(time.perf_counter() - start)
    log(f'step {i}: {times[-1]:.2f} s, loss {loss:.4f}')
  # Before the FLOP count and sampler: the peak of training itself (KiB on Linux).
  peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  step_s = statistics.median(times)
  result.update(steps=args.steps, warmup=args.warmup, step_times=times, step_s=step_s,
                step_s_min=min(times), videos_per_s=B / step_s, loss=loss,
                peak_rss_gib=peak_rss_gib)

  try:  # On the meta device: the counter's formulas need shapes only, so no extra real step.
    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
    with torch.device('meta'):
      meta_unet = diffusers.UNet3DConditionModel(**arch).train()
      inputs = [torch.empty_like(a, device='meta') for a in (x_t, noise, t, text)]
      with FlopCounterMode(display=False) as counter:
        pred = meta_unet(inputs[0], inputs[2], encoder_hidden_states=inputs[3]).sample
        torch.nn.functional.mse_loss(pred, inputs[1]).backward()
    result['flops_per_step'] = int(counter.get_total_flops())
  except Exception as e:  # pylint: disable=broad-except
    log(f'FLOP count failed: {e!r}')
    result['flops_per_step'] = None

  # Sampler: one classifier-free-guidance step = conditional + unconditional at batch 2B. No
  # warm-up call: the training steps already ran every kernel.
  unet.eval()
  x2, t2, text2 = (torch.cat([a, a]) for a in (x_t, t, text))
  sample_times = []
  with torch.inference_mode():
    for _ in range(args.sample_calls):
      start = time.perf_counter()
      unet(x2, t2, encoder_hidden_states=text2)
      sample_times.append(time.perf_counter() - start)
  result.update(sample_s_per_nfe=statistics.median(sample_times), sample_times=sample_times,
                sample_batch=2 * B)
  return result


def print_table(r: dict):
  arch = r['architecture']
  print(f'diffusers {r["diffusers"]} UNet3DConditionModel, torch {r["torch"]}, {r["threads"]} '
        f'threads; config {r["config"]}: batch {r["batch"]} of '
        f'{"x".join(map(str, r["video_shape"]))}')
  rows = [('architecture', f'block_out_channels {arch["block_out_channels"]}, layers_per_block '
           f'{arch["layers_per_block"]}, attention_head_dim {arch["attention_head_dim"]}, '
           f'norm_num_groups {arch["norm_num_groups"]}'),
          ('blocks', f'down {arch["down_block_types"]}, up {arch["up_block_types"]}'),
          ('params', f'{r["params"] / 1e6:.2f}M (target {r["target_params"] / 1e6:.2f}M, '
           f'{100 * r["params_rel_err"]:+.1f}%)'),
          ('build', f'{r["build_s"]:.2f} s')]
  if 'step_s' in r:
    flops = r.get('flops_per_step')
    rows += [('train step', f'median {r["step_s"]:.3f} s, min {r["step_s_min"]:.3f} s '
              f'({r["steps"]} steps), {r["videos_per_s"]:.2f} videos/s'),
             ('FLOPs/step', f'{flops / 1e9:.0f} GFLOP, {flops / 1e9 / r["step_s"]:.0f} GFLOP/s'
              if flops else 'n/a'),
             ('sampler', f'{r["sample_s_per_nfe"]:.3f} s per NFE at batch {r["sample_batch"]}'),
             ('peak RSS', f'{r["peak_rss_gib"]:.2f} GiB')]
  for name, value in rows:
    print(f'  {name:<12} {value}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='S', choices=sorted(CONFIGS))
  parser.add_argument('--batch', type=int, help="default: the config's")
  parser.add_argument('--frames', type=int)
  parser.add_argument('--size', type=int)
  parser.add_argument('--target_params', type=int)
  parser.add_argument('--text_length', type=int, default=64)
  parser.add_argument('--text_dim', type=int, default=128)
  parser.add_argument('--steps', type=int, default=5, help='timed steps after --warmup')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--sample_calls', type=int, default=3)
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--head_dim', type=int, help='pin attention_head_dim (default: searched)')
  parser.add_argument('--params_only', action='store_true', help='match the architecture only')
  parser.add_argument('--json_out', help="JSON path, '-' or none: stdout")
  parser.add_argument('--venv_dir', default=DEFAULT_VENV, help='used without torch here')
  parser.add_argument('--timeout_s', type=float, default=3600)
  args = parser.parse_args()
  for key in ('batch', 'frames', 'size', 'target_params'):
    if getattr(args, key) is None:
      setattr(args, key, CONFIGS[args.config][key])

  import importlib.util  # pylint: disable=g-import-not-at-top
  if not all(importlib.util.find_spec(m) for m in ('torch', 'diffusers')):
    if os.environ.get(_CHILD_ENV):
      sys.exit(f'torch or diffusers not importable by {sys.executable}')
    # The main venv: go through the torch venv, then show a table.
    result = run_reference(
        venv_dir=args.venv_dir, config_name=args.config, batch=args.batch, frames=args.frames,
        size=args.size, target_params=args.target_params, text_length=args.text_length,
        text_dim=args.text_dim, steps=args.steps, threads=args.threads,
        timeout_s=args.timeout_s, head_dim=args.head_dim, params_only=args.params_only)
    print_table(result)
    if args.json_out:
      with open(args.json_out, 'w') as f:
        json.dump(result, f, indent=2)
    return

  result = benchmark(args)
  if args.json_out and args.json_out != '-':
    with open(args.json_out, 'w') as f:
      json.dump(result, f, indent=2)
  else:
    print(json.dumps(result))


if __name__ == '__main__':
  main()
