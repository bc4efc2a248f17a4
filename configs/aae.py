"""Adversarial autoencoder (Makhzani et al. 2016): Bernoulli decoder, latent 8, codes matched to N(0, I).

The built-in config `--config=aae` (jaxae/config_files/aae.py), kept here so that `--config=configs/aae.py`
works from a clone of the repository.
"""

from jaxae.config_files.aae import get_config  # noqa: F401
