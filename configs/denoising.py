"""Denoising autoencoder (Vincent et al. 2008): Gaussian noise sigma=0.3 clipped to [0, 1], clean targets.

The built-in config `--config=denoising` (jaxae/config_files/denoising.py), kept here so that `--config=configs/denoising.py`
works from a clone of the repository.
"""

from jaxae.config_files.denoising import get_config  # noqa: F401
