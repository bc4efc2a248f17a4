"""`python -m jaxae.config_files`: the built-in configs (`--config=NAME`) and their files."""

import os

from jaxae.config_files import HERE, builtin

for name in builtin():
  print(f"{name:<12} {os.path.join(HERE, name + '.py')}")
