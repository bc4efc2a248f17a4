"""Reproduction studies of jaxae (issue 4): each module is `python -m experiments.<name> --out=DIR [--smoke]`."""
