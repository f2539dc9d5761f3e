"""A straightforward Tune-A-Video training step written to the reference implementation's recipe.

Every step re-encodes the video with the VAE and the prompt with the text encoder, attention is the plain
fp32 ``softmax(q k^T) v`` math (diffusers' AttnProcessor, and the same for the temporal attention), and every
UNet parameter requires grad (the optimiser still only updates the tuned ones). The benchmark times it
against the engine in the same run.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import AttnProcessor

from tav_core.loading.tuned import video_parameters
from tav_core.model.attention import TemporalAttention, plain_attention


@contextmanager
def reference_attention(unet):
    """Plain attention math everywhere, undone on exit."""
    processors, temporal = unet.attn_processors, TemporalAttention.attention
    unet.set_attn_processor(AttnProcessor())
    TemporalAttention.attention = staticmethod(plain_attention)
    try:
        yield
    finally:
        TemporalAttention.attention = staticmethod(temporal)
        unet.set_attn_processor(processors)


class BaselineTuner:
    def __init__(self, pipe, pixels: torch.Tensor, prompt: str, lr: float = 3e-5, every_parameter: bool = True):
        """``every_parameter=False``: only the tuned parameters require grad, as the reference's script sets them
        (``bench.job``); True (``bench.run --compare``, as first measured) computes every weight's gradient."""
        self.pipe, self.pixels = pipe, pixels
        self.ids = pipe.c.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
        if every_parameter:
            pipe.c.unet.requires_grad_(True)
        else:
            for p in video_parameters(pipe.c.unet, trainable_only=True).values():
                p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(video_parameters(pipe.c.unet, trainable_only=True).values(), lr=lr,
                                           weight_decay=1e-2)
        self.scheduler = DDPMScheduler.from_config(pipe.c.scheduler_config)
        self.generator = torch.Generator().manual_seed(0)

    def step(self) -> float:
        c = self.pipe.c
        self.latents = latents = c.vae.encode(self.pixels).latent_dist.sample() * c.vae.config.scaling_factor
        cond = c.text_encoder(self.ids)[0].expand(len(latents), -1, -1)
        noise = torch.randn(latents.shape, generator=self.generator)
        t = torch.randint(0, 1000, (1,), generator=self.generator).expand(len(latents))
        with self.pipe.inflation.video(len(latents)):
            pred = c.unet(self.scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=cond).sample
            loss = F.mse_loss(pred, noise)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(c.unet.parameters(), 1.0)
        self.optimizer.step()
        c.unet.zero_grad(set_to_none=True)
        return loss.item()
