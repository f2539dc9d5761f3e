"""The video model: a Stable Diffusion UNet made a video UNet in place. ``frames`` (how many frames a batch holds
while a clip runs), ``attention`` (sparse-causal frame attention, the temporal attention, clip-wide group norms),
``inflation`` (the hooks and temporal layers on a UNet), ``conditioning`` (what the UNet takes besides the latents:
SD's text tokens, SDXL's pooled text and size ids), ``lora`` (low-rank adapters on the tuned layers), ``motion``
(AnimateDiff's motion modules as hooks). May import the shared leaves only."""
