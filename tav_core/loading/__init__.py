"""Models and weights from files, offline: ``configs`` (the shipped SD1/SD2/SDXL configs, tokenizer, a model's
architecture), ``checkpoints`` (single files and diffusers folders), ``fingerprint`` (which base model weights
belong to), ``tuned`` (the tuned-weights file), ``reference`` (a UNet saved by the reference code), ``tiny`` (random
toy models for the demo and the tests), ``motion`` (AnimateDiff motion modules). May import ``model`` and
``sampling`` and the shared leaves."""
