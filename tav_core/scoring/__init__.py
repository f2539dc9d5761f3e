"""Measuring an edit: ``metrics`` (CLIP frame consistency and text alignment, PSNR, SSIM), ``clip`` (the CLIP
model that embeds frames and prompts), ``report`` (the scores, their table, JSON and chart). May import ``loading``
and the shared leaves."""
