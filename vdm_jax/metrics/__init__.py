"""Evaluation metrics: the Frechet distance (frechet.py) and the networks whose features it
compares: I3D for FVD (i3d.py, weights converted by convert_i3d.py) and a small video classifier
trained on moving_shapes for the learned-feature FVD (video_classifier.py)."""

# What `config.eval.metrics` may name (vdm_jax/evaluate.py computes them; experiments/base.py says
# what each is); checked by vdm_jax/config_validation.py.
METRICS = ('adherence', 'bpd', 'fvd_learned', 'fvd_i3d')
