"""Importance-weighted autoencoder (Burda et al. 2016): Bernoulli decoder, latent 32, K = 5 samples.

The built-in config `--config=iwae` (jaxae/config_files/iwae.py), kept here so that `--config=configs/iwae.py`
works from a clone of the repository.
"""

from jaxae.config_files.iwae import get_config  # noqa: F401
