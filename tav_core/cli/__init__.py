"""The ``tuneavideo`` command line: ``parser`` (its commands and options; imports nothing heavy), ``checks`` (every
check before the model loads: numbers, paths, headers), ``commands`` (the flows), ``main`` (the entry point, which
imports ``commands`` only after the checks). May import every layer below it."""

from .main import main  # noqa: F401  (the ``tuneavideo`` entry point)
