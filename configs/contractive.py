"""Contractive autoencoder (Rifai et al. 2011): MSE + lambda * ||J_encoder(x)||_F^2, exact via jax.jacrev.

The built-in config `--config=contractive` (jaxae/config_files/contractive.py), kept here so that `--config=configs/contractive.py`
works from a clone of the repository.
"""

from jaxae.config_files.contractive import get_config  # noqa: F401
