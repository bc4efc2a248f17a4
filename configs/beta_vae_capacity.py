"""beta-VAE with controlled capacity increase (Burgess et al. 2018): Bernoulli decoder, latent 32, C -> 25 nats.

The built-in config `--config=beta_vae_capacity` (jaxae/config_files/beta_vae_capacity.py), kept here so
that `--config=configs/beta_vae_capacity.py` works from a clone of the repository.
"""

from jaxae.config_files.beta_vae_capacity import get_config  # noqa: F401
