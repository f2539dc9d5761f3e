"""One-shot tuning: ``tune`` (the training loop: the trained tensors, one timestep per step, MSE on eps or v),
``state`` (the resumable training state). May import ``loading``, ``sampling``, ``model`` and the shared leaves."""
