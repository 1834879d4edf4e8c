"""Data: tokenizers, the Moving Shapes dataset, its tracker and the grain pipeline.

Kept import-free on purpose: `vdm_jax.data.tokenizer` is imported by the model and
must not pull in TFDS or grain.
"""
