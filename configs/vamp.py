"""VAE with a VampPrior (Tomczak & Welling 2018): Bernoulli decoder, latent 32, K = 50 pseudo-inputs.

The built-in config `--config=vamp` (jaxae/config_files/vamp.py), kept here so that `--config=configs/vamp.py`
works from a clone of the repository.
"""

from jaxae.config_files.vamp import get_config  # noqa: F401
