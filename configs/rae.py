"""Regularized autoencoder, RAE-L2 (Ghosh et al. 2020): the authors' MNIST setup, latent 16.

The built-in config `--config=rae` (jaxae/config_files/rae.py), kept here so that `--config=configs/rae.py`
works from a clone of the repository.
"""

from jaxae.config_files.rae import get_config  # noqa: F401
