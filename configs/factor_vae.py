"""FactorVAE (Kim & Mnih 2018): Bernoulli decoder, latent 10, gamma = 10, a 2 x 512 latent discriminator.

The built-in config `--config=factor_vae` (jaxae/config_files/factor_vae.py), kept here so that `--config=configs/factor_vae.py`
works from a clone of the repository.
"""

from jaxae.config_files.factor_vae import get_config  # noqa: F401
