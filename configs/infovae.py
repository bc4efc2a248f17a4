"""InfoVAE with the MMD divergence (Zhao et al. 2019): Bernoulli decoder, latent 32, alpha 0, lambda 100.

The built-in config `--config=infovae` (jaxae/config_files/infovae.py), kept here so that
`--config=configs/infovae.py` works from a clone of the repository.
"""

from jaxae.config_files.infovae import get_config  # noqa: F401
