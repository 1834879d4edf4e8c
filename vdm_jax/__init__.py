"""vdm_jax: video diffusion models in JAX and Flax Linen.

Text-to-video generation by denoising diffusion, following DDPM (Ho et al. 2020),
Video Diffusion Models (Ho et al. 2022) and Imagen Video (Ho et al. 2022).
"""

__version__ = '0.1.0'
