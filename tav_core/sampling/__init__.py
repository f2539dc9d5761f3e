"""Running the video model over the noise schedule: ``schedule`` (SD's DDIM timesteps and sigmas), ``denoiser``
(a UNet as a function of ``(x, sigma)``, CFG), ``ddim`` (inversion and sampling), ``windows`` (frame windows of a
long clip, anchored on its first frame, and their fusion). May import ``model`` and the shared leaves."""
