"""Variants as plug-ins: one module per objective, registered by name (see base.py for the protocol).

    from jaxae import variants
    variants.get("vae").make_loss(config, net)
    variants.register(variants.Variant(name="mine", make_loss=...))   # a user's own variant
"""

from jaxae.variants.base import (Variant, all_variants, autoencode, get, names, reconstruction,  # noqa: F401
                                 register)
from jaxae.variants import contractive, denoising, sae, sparse, supervised, vae, vanilla  # noqa: F401,E402  (registers them)
