"""VQ-VAE (van den Oord et al. 2017): conv encoder, spatial 7x7x8 code, K = 128 codes, MSE reconstruction.

The built-in config `--config=vqvae` (jaxae/config_files/vqvae.py), kept here so that `--config=configs/vqvae.py`
works from a clone of the repository.
"""

from jaxae.config_files.vqvae import get_config  # noqa: F401
