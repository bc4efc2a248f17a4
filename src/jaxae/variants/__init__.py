"""Variants as plug-ins: one module per objective, registered by name (see base.py for the protocol).

    from jaxae import variants
    variants.get("vae").make_loss(config, net)
    variants.register(variants.Variant(name="mine", make_loss=...))   # a user's own variant

Every module of this package registers its variant on import, and every module here is imported (in
name order): a new built-in variant is one new file, with no list to edit.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from jaxae.variants.base import (LatentModel, Variant, all_variants, autoencode, get, names,  # noqa: F401
                                 reconstruction, register)

for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
  if _module != "base" and not _module.startswith("_"):
    _importlib.import_module(f"{__name__}.{_module}")
