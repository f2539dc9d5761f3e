"""How a two-branch edit (source and edit sampled together, Video-P2P) or a null-text sampling rides through
ComfyUI's sampler: the latent batch is branches x frames; ComfyUI gives each cond chunk one conditioning (the
edit's), so the APPLY_MODEL wrapper puts the source prompt into the source rows and, per step, the optimised null
text into the unconditional rows of the source branch (and of the edit branch unless guidance is decoupled).
"""

from dataclasses import dataclass
from functools import partial

import torch

from ..tav_core.editing.attention_control import AttentionController
from ..tav_core.errors import check
from . import host

KEY = "tav_edit"


@dataclass
class EditPlan:
    frames: int
    branches: int                          # 2: [source; edit] rows, 1: the clip alone
    sigmas: torch.Tensor                   # the sampling schedule, to tell the step from a sigma
    source_context: torch.Tensor | None    # the source prompt's conditioning (two branches)
    null_text: torch.Tensor | None         # (steps, tokens, dim): optimised unconditional embeddings
    decoupled: bool = True                 # the edit branch keeps the plain negative prompt (Video-P2P)
    controller: AttentionController | None = None
    source_adm: torch.Tensor | None = None  # SDXL: the source prompt's ADM vector (pooled text and size), one row

    def __deepcopy__(self, memo):
        return self  # ComfyUI deep-copies model options; the edit's state (blend maps) must stay one object

    def step_of(self, sigma: torch.Tensor) -> int:
        return int((self.sigmas.to(sigma) - sigma.flatten()[0]).abs().argmin())

    def context(self, context: torch.Tensor, sigma: torch.Tensor, chunks: list[int]) -> torch.Tensor:
        """The cross-attention context of every row: chunks x branches x frames."""
        f = context.shape[0] // (len(chunks) * self.branches)  # the clip's frames, or a window's
        rows = self.branches * f
        check(context.shape[0] == len(chunks) * rows, f"context of {context.shape[0]} rows is not {len(chunks)} x "
                                                      f"{self.branches} x {f}")
        context = context.clone()
        for c, kind in enumerate(chunks):
            source = slice(c * rows, c * rows + f)
            if kind == 0 and self.source_context is not None:
                context[source] = self._fit(self.source_context, context)
            if kind == 1 and self.null_text is not None:
                null = self._fit(self.null_text[self.step_of(sigma)][None], context)
                context[source] = null
                if self.branches == 2 and not self.decoupled:
                    context[c * rows + f:(c + 1) * rows] = null
        return context

    def adm(self, y: torch.Tensor, chunks: list[int]) -> torch.Tensor:
        """SDXL's ADM vector of every row: the source rows of the conditional chunks take the source prompt's."""
        if self.source_adm is None:
            return y
        rows = y.shape[0] // len(chunks)
        f = rows // self.branches
        y = y.clone()
        for c, kind in enumerate(chunks):
            if kind == 0:
                y[c * rows:c * rows + f] = self.source_adm.to(y)
        return y

    @staticmethod
    def _fit(replacement: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        check(replacement.shape[1:] == context.shape[1:],
              f"conditioning of {replacement.shape[1]} tokens where the batch has {context.shape[1]}: the source, edit "
              "and negative prompts must each fit in CLIP's 77 tokens")
        return replacement.to(context)


def clips_per_chunk(transformer_options) -> int:
    """Clips in each cond chunk of the batch: 2 (source and edit branch) during a two-branch edit, else 1."""
    plan = transformer_options.get(KEY)
    return plan.branches if plan is not None else 1


def attention_blocks(model) -> list[tuple[str, int]]:
    """ComfyUI's keys (block, number) of the UNet blocks holding transformer blocks: where attention patches go."""
    unet = model.model.diffusion_model
    has_attention = lambda block: any(hasattr(m, "transformer_blocks") for m in block.modules())
    keys = [("input", i) for i, b in enumerate(unet.input_blocks) if has_attention(b)]
    keys += [("middle", 0)] if has_attention(unet.middle_block) else []
    return keys + [("output", i) for i, b in enumerate(unet.output_blocks) if has_attention(b)]


def with_edit_plan(model, plan: EditPlan):
    """A clone of ``model`` that samples by ``plan``: its wrapper reads the plan; with a controller, every attention
    of the UNet goes through it (the host's replace patches, after the video hooks shaped k and v)."""
    model = model.clone()
    model.model_options.setdefault("transformer_options", {})[KEY] = plan
    if plan.controller is not None:
        def patch(is_cross):
            def attention(q, k, v, extra_options):
                plan.controller.step = plan.step_of(extra_options["sigmas"])
                return plan.controller(q, k, v, extra_options["n_heads"], is_cross, extra_options["cond_or_uncond"])
            return attention
        for block, number in attention_blocks(model):
            model.set_model_attn1_replace(patch(False), block, number)
            model.set_model_attn2_replace(patch(True), block, number)
        if not plan.controller.control.source_cfg:
            model.set_model_sampler_post_cfg_function(partial(source_without_guidance, plan.frames))
    return model


def source_without_guidance(frames: int, args: dict) -> torch.Tensor:
    """Post-CFG: the source branch's rows take the conditional prediction alone (Video-P2P's --fast)."""
    denoised = args["denoised"].clone()
    denoised[:frames] = args["cond_denoised"][:frames]
    return denoised


def comfy_attention(q, k, v, heads):
    """The host's attention (its choice of SDPA, xformers, sage...)."""
    return host.attention.optimized_attention(q, k, v, heads)
