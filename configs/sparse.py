"""Sparse autoencoder: MSE + 1e-3 * mean|z| (the reference protocol).

The built-in config `--config=sparse` (jaxae/config_files/sparse.py), kept here so that `--config=configs/sparse.py`
works from a clone of the repository.
"""

from jaxae.config_files.sparse import get_config  # noqa: F401
