"""VAE with a normalizing-flow posterior: Bernoulli decoder, latent 32, 4 planar steps.

The built-in config `--config=vae_flow` (jaxae/config_files/vae_flow.py), kept here so that
`--config=configs/vae_flow.py` works from a clone of the repository.
"""

from jaxae.config_files.vae_flow import get_config  # noqa: F401
