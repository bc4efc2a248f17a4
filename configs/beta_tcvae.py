"""beta-TCVAE (Chen et al. 2018): Bernoulli decoder, latent 10, alpha = gamma = 1, beta = 6, MSS estimator.

The built-in config `--config=beta_tcvae` (jaxae/config_files/beta_tcvae.py), kept here so that
`--config=configs/beta_tcvae.py` works from a clone of the repository.
"""

from jaxae.config_files.beta_tcvae import get_config  # noqa: F401
