"""Prompt-to-Prompt attention control for a source and an edit branch sampled in one batch (Video-P2P's design).

The batch of every UNet call is chunks (cond/uncond) x branches (source, edit) x frames. In the conditional
chunks, for the first steps:

* cross-attention (``cross_steps``): the edit's maps follow the source's: word swap ``P_src M``, refinement
  ``P_src[:, mapper] a + P_edit (1 - a)``, optionally reweighted per word (``P * scale``);
* self-attention (``self_steps``): the edit's maps are the source's: ``self_control="spatial"`` (default) the
  sparse-causal attention at layers with at most ``self_max_pixels`` query pixels (Prompt-to-Prompt: 32x32 for
  512-pixel images); ``"temporal"`` the temporal attention at every resolution, where Video-P2P's code applies it
  (it hooks attention modules by class name, and only its temporal attention has that class).

No map is materialised for this: each rule is linear in the values, so ``P_src @ f(V_edit)`` is one scaled-dot-
product attention on the source's queries and keys with transformed edit values, at any resolution, in the
host's own memory-efficient attention. Only local blend reads probabilities: the cross-attention of its words at
resolutions up to 32x32, averaged over heads as they are computed and summed over steps, so what is stored is
(branches, frames, pixels) per resolution.

Local blend: after every step from ``blend_start``, a mask from those maps (the resolution nearest a quarter of
the latent's side, as Prompt-to-Prompt's 16x16 for 64x64 latents; dilated 3x3, normalised per frame,
thresholded, the union of source and edit words) keeps the edit's latents equal to the source's outside it. Inside
the cross window the edit's maps summed are the controlled ones, as in the reference (whose control writes into
the stored maps).
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..choices import SELF_CONTROL
from ..errors import check, in_range
from .prompt_alignment import TOKENS, equalizer, refinement_mapper, replacement_mapper, word_token_indices

MODES = ("auto", "replace", "refine")


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled-dot-product attention of (batch, tokens, heads * dim) tensors."""
    b = q.shape[0]
    q, k, v = (t.reshape(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, heads * v.shape[-1])


def probabilities(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention maps softmax(q k^T / sqrt(d)) of (batch, tokens, heads * dim): (batch, heads, queries, keys)."""
    b, d = q.shape[0], q.shape[-1] // heads
    q, k = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k))
    return (q @ k.transpose(-1, -2) * d ** -0.5).softmax(-1)


def parse_reweights(text: str, name: str = "reweight") -> dict[str, float]:
    """'origami:2, rabbit:0.5' -> {word: attention scale}, each scale finite and sensible; ``name`` is the
    option or widget the text came from, for the message."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        word, _, value = item.partition(":")
        try:
            weights[word.strip()] = float(value)
        except ValueError:
            check(False, f"{name} {item!r} is not 'word:number'; write e.g. 'origami:2, rabbit:0.5'")
        in_range(f"{name} {word.strip()!r}", weights[word.strip()], -10, 10,
                 " (Prompt-to-Prompt's examples: 0.5 to 5; below 1 weakens a word, above strengthens it)")
    return weights


@dataclass
class EditControl:
    """What the edit keeps of the source (defaults: Video-P2P's code; Prompt-to-Prompt's image examples use
    cross 0.8 / self 0.4)."""
    source_prompt: str
    edit_prompt: str
    mode: str = "auto"                 # "replace" (word swap), "refine" (words added/removed), "auto": by word count
    cross_steps: float = 0.2           # fraction of the steps whose cross-attention follows the source
    self_steps: float = 0.5            # fraction of the steps whose self-attention is the source's
    reweight: dict[str, float] = field(default_factory=dict)  # edit-prompt word -> attention scale
    blend_words: tuple[list[str] | str, list[str] | str] | None = None  # (source, edit) words: local blend
    blend_threshold: float = 0.3
    blend_start: float = 0.2           # fraction of the steps before local blend starts
    self_max_pixels: int = 32 * 32
    self_control: str = "spatial"      # which self-attention "self_steps" controls: SELF_CONTROL
    source_cfg: bool = True            # False: the source branch samples without guidance (Video-P2P's --fast)

    def resolved_mode(self) -> str:
        check(self.mode in MODES, f"attention control mode {self.mode!r} is not one of {MODES}")
        if self.mode != "auto":
            return self.mode
        return "replace" if len(self.source_prompt.split()) == len(self.edit_prompt.split()) else "refine"


class AttentionController:
    """The control of one two-branch edit of ``frames`` frames over ``steps`` sampling steps."""

    def __init__(self, control: EditControl, tokenizer, steps: int, frames: int, latent_size: tuple[int, int],
                 attention=sdpa):
        for name in ("cross_steps", "self_steps", "blend_start", "blend_threshold"):
            value = getattr(control, name)
            check(0 <= value <= 1, f"{name} must be from 0 to 1, got {value}")
        check(control.self_control in SELF_CONTROL, f"self_control {control.self_control!r} is not one of "
                                                    f"{SELF_CONTROL} (spatial: Prompt-to-Prompt's, temporal: Video-P2P "
                                                    "code's)")
        self.control, self.frames, self.latent_size, self.attention = control, frames, latent_size, attention
        self.mode = control.resolved_mode()
        src, edit = control.source_prompt, control.edit_prompt
        if self.mode == "replace":
            self.mapper = replacement_mapper(tokenizer, src, edit)
        else:
            self.mapper, self.alphas = refinement_mapper(tokenizer, src, edit)
        self.scale = equalizer(tokenizer, edit, control.reweight)
        self.cross_stop = int(control.cross_steps * (steps + 1))  # Prompt-to-Prompt's step boundaries
        self.self_stop = int(control.self_steps * steps)
        self.blend_from = int(control.blend_start * steps)
        self.blend_tokens = None
        if control.blend_words is not None:
            indices = []
            for prompt, words in zip((src, edit), control.blend_words):
                words = [words] if isinstance(words, str) else list(words)
                check(len(words) > 0, "local blend needs at least one word of each prompt")
                indices.append(sorted({i for w in words for i in word_token_indices(tokenizer, prompt, w)}))
            self.blend_tokens = indices
        self.step = 0          # the sampling step being run (set by the sampler)
        self.chunks = [1, 0]   # what the chunks of the next batch are (0: conditional), where the host does not say
        self.maps: dict[int, torch.Tensor] = {}  # pixels -> (branches, frames, pixels): blend maps, summed
        self.last_mask: torch.Tensor | None = None
        self.window: tuple[list[int], torch.Tensor] | None = None  # frames of the call and their fuse weights

    def follow_window(self, indices: list[int], weights: torch.Tensor) -> None:
        """The next calls run these frames of the clip (a window; ``tav_core.sampling.windows``), fused with these weights."""
        self.window = (indices, weights)

    # ---- one attention layer

    def __call__(self, q, k, v, heads: int, is_cross: bool, chunks: list[int], temporal: bool = False) -> torch.Tensor:
        """Attention of one layer for a batch of ``chunks`` (0: conditional, 1: unconditional) x 2 branches x frames
        (``temporal``: of the temporal attention, x pixels, attending over frames)."""
        out = self.attention(q, k, v, heads)
        f = len(self.window[0]) if self.window is not None else self.frames
        rows = q.shape[0] // (2 * len(chunks))  # of one branch of one chunk
        check(q.shape[0] == len(chunks) * 2 * rows and (temporal or rows == f),
              f"attention batch of {q.shape[0]} is not {len(chunks)} x 2 branches x {f} frames")
        controls_self = temporal == (self.control.self_control == "temporal")
        for c, kind in enumerate(chunks):
            if kind != 0:  # the unconditional chunks are left as they are, as Prompt-to-Prompt does
                continue
            src, edit = slice(2 * c * rows, (2 * c + 1) * rows), slice((2 * c + 1) * rows, (2 * c + 2) * rows)
            if is_cross:
                self._record(q, k, heads, src, edit)
                controlled = self._cross(q, k, v, heads, src, edit)
            else:
                controlled = self._self(q, k, v, heads, src, edit) if controls_self else None
            if controlled is not None:
                out[edit] = controlled
        return out

    def _self(self, q, k, v, heads, src, edit):
        # the size limit counts queries: pixels, or frames in the temporal attention (as the reference's test does)
        if self.step >= self.self_stop or q.shape[1] > self.control.self_max_pixels:
            return None
        return self.attention(q[src], k[src], v[edit], heads)  # the source's maps on the edit's values

    def _token_scale(self, v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return v * scale.to(v)[None, :, None]

    def _cross(self, q, k, v, heads, src, edit):
        if self.step >= self.cross_stop:
            return None  # after tau_cross the edit attends on its own, reweighting included (Prompt-to-Prompt)
        check(v.shape[1] == TOKENS, f"attention control needs 77-token prompts, got {v.shape[1]} tokens")
        ve = v[edit]
        if self.mode == "replace":  # P_src M (scale): values mixed by M
            mixed = torch.einsum("wn,bnc->bwc", self.mapper.to(ve), self._token_scale(ve, self.scale))
            return self.attention(q[src], k[src], mixed, heads)
        # refine: P_src[:, mapper] (a scale) + P_edit ((1 - a) scale), values gathered back onto source tokens
        taken = self._token_scale(ve, self.alphas * self.scale)
        gathered = torch.zeros_like(ve).index_add_(1, self.mapper.to(ve.device), taken)
        own = self._token_scale(ve, (1 - self.alphas) * self.scale)
        return self.attention(q[src], k[src], gathered, heads) + self.attention(q[edit], k[edit], own, heads)

    def _controlled_maps(self, p_src: torch.Tensor, p_edit: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        """The edit's cross-attention maps after control, at ``tokens``: (frames, heads, pixels, len(tokens))."""
        scale = self.scale.to(p_src)[tokens]
        if self.mode == "replace":
            return p_src @ (self.mapper.to(p_src)[:, tokens] * scale)
        alphas = self.alphas.to(p_src)[tokens]
        taken = p_src[..., self.mapper[tokens].to(p_src.device)]
        return taken * alphas * scale + p_edit[..., tokens] * (1 - alphas) * scale

    def _record(self, q, k, heads, src, edit):
        """Local blend's maps: cross-attention of its words, averaged over heads (small layers only); the edit's
        are taken after control in the cross window."""
        pixels = q.shape[1]
        if self.blend_tokens is None or pixels > 32 * 32:
            return
        p_src, p_edit = probabilities(q[src], k[src], heads), probabilities(q[edit], k[edit], heads)
        src_tokens, edit_tokens = self.blend_tokens
        edit_maps = (self._controlled_maps(p_src, p_edit, edit_tokens) if self.step < self.cross_stop
                     else p_edit[..., edit_tokens])
        maps = torch.stack([p_src[..., src_tokens].sum(-1).mean(1), edit_maps.sum(-1).mean(1)]).float()
        if self.window is None:
            self.maps[pixels] = self.maps.get(pixels, 0) + maps
            return
        indices, weights = self.window  # a window's maps count by their fuse weights, as its latents do
        total = self.maps.get(pixels)
        if total is None:
            total = self.maps[pixels] = maps.new_zeros(2, self.frames, pixels)
        total.index_add_(1, torch.tensor(indices, device=maps.device), maps * weights.to(maps)[None, :, None])

    # ---- between steps

    def blend_mask(self) -> torch.Tensor:
        """(frames, 1, h, w) at latent size: where the edit may differ from the source."""
        check(bool(self.maps), "local blend found no cross-attention maps of 32x32 pixels or fewer")
        h, w = self.latent_size
        target = (h // 4) * (w // 4)
        pixels = min(self.maps, key=lambda n: abs(math.log(n / max(target, 1))))
        scale = round((h * w / pixels) ** 0.5)
        maps = self.maps[pixels].reshape(2 * self.frames, 1, h // scale, w // scale)
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=(h, w))
        maps = maps / maps.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)
        mask = (maps > self.control.blend_threshold).reshape(2, self.frames, 1, h, w)
        return (mask[0] | mask[1]).float()

    def after_step(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Local blend of the latents after step ``i``: x = [source frames; edit frames] (any scaling)."""
        if self.blend_tokens is None or i < self.blend_from:
            return x
        f = self.frames
        mask = self.blend_mask().to(x)
        self.last_mask = mask
        return torch.cat([x[:f], x[:f] + mask * (x[f:] - x[:f])])


class ControlledProcessor:
    """A diffusers attention processor that hands the projected q, k, v to a controller (the video hooks on
    ``to_k``/``to_v`` still make the self-attention sparse-causal)."""

    def __init__(self, controller: AttentionController, is_cross: bool):
        self.controller, self.is_cross = controller, is_cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        out = self.controller(q, k, v, attn.heads, self.is_cross, self.controller.chunks)
        return attn.to_out[1](attn.to_out[0](out))


def temporal_control(controller: AttentionController):
    """What a ``TemporalAttention.control`` runs: the temporal attention through ``controller``."""
    return lambda q, k, v, heads: controller(q, k, v, heads, False, controller.chunks, temporal=True)


@contextmanager
def controlled_temporal(attentions, controller: AttentionController):
    """Route these ``TemporalAttention`` modules through ``controller`` while inside."""
    for a in attentions:
        a.control = temporal_control(controller)
    try:
        yield controller
    finally:
        for a in attentions:
            a.control = None


@contextmanager
def controlled(blocks, controller: AttentionController):
    """Route the attention of these diffusers transformer blocks (their temporal attention too) through
    ``controller`` while inside."""
    temporal = [b.attn_temp for b in blocks if hasattr(b, "attn_temp")]
    check(temporal or controller.control.self_control != "temporal",
          "temporal self-control acts on Tune-A-Video's temporal attention, and this model's temporal layers are a "
          "motion module: control the frames' self-attention instead (--self-control spatial)")
    saved = [(b.attn1, b.attn1.processor, b.attn2, b.attn2.processor) for b in blocks]
    for b in blocks:
        b.attn1.set_processor(ControlledProcessor(controller, False))
        b.attn2.set_processor(ControlledProcessor(controller, True))
    try:
        with controlled_temporal(temporal, controller):
            yield controller
    finally:
        for attn1, p1, attn2, p2 in saved:
            attn1.set_processor(p1)
            attn2.set_processor(p2)
