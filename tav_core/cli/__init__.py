"""The ``tuneavideo`` command line: ``parser`` (its commands and options; imports nothing heavy), ``checks`` (every
check before the model loads: numbers, paths, headers), ``commands`` (the flows of run, tune and edit: the model
code), ``score`` (the score command and report: torch and CLIP, no diffusers), ``shared`` (the device, the outputs'
writers), ``main`` (the entry point, which imports ``commands`` or ``score`` only after the checks). May import every
layer below it."""

from .main import main  # noqa: F401  (the ``tuneavideo`` entry point)
