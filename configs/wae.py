"""Wasserstein autoencoder, WAE-MMD (Tolstikhin et al. 2018): the authors' MNIST objective, latent 8.

The built-in config `--config=wae` (jaxae/config_files/wae.py), kept here so that `--config=configs/wae.py`
works from a clone of the repository.
"""

from jaxae.config_files.wae import get_config  # noqa: F401
