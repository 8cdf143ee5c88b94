"""Attention variants. Every module in this package is imported, so a new variant only needs its
file here (a class decorated with ``ATTENTION.register``) and ``conf/attention/<name>.yaml``."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
