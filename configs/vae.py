"""Variational autoencoder (Kingma & Welling 2014): Bernoulli decoder, latent 32, beta = 1.

The built-in config `--config=vae` (jaxae/config_files/vae.py), kept here so that `--config=configs/vae.py`
works from a clone of the repository.
"""

from jaxae.config_files.vae import get_config  # noqa: F401
