"""Evaluation metrics: the Frechet distance (frechet.py) and the networks whose features it
compares: I3D for FVD (i3d.py, weights converted by convert_i3d.py), Inception-v3 for the FID and
Inception Score of video frames (inception.py, weights converted by convert_inception.py), C3D for
the FID and Inception Score of whole videos, UCF-101's protocol (c3d.py, weights converted by
convert_c3d.py), and a small video classifier of a built-in dataset's captions
(video_classifier.py) for the learned-feature FVD and, on moving_digits, the digit accuracy of
generated videos."""

# What `config.eval.metrics` may name (vdm_jax/evaluate.py computes them; experiments/base.py says
# what each is); checked by vdm_jax/config_validation.py.
METRICS = ('adherence', 'bpd', 'fvd_learned', 'fvd_i3d', 'digit_accuracy', 'fid_frames',
           'is_frames', 'fid_c3d', 'is_c3d')
# The (FID, IS) pairs of METRICS, by network: Inception-v3 on frames, C3D on 16-frame videos.
FRAME_METRICS = ('fid_frames', 'is_frames')
C3D_METRICS = ('fid_c3d', 'is_c3d')
