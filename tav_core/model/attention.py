"""The two attention ideas of Tune-A-Video, on batch-folded ``(b f) tokens channels`` tensors."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..choices import FRAME_ATTENTION, GROUP_NORMS
from ..errors import check


def check_frame_attention(kind: str) -> str:
    check(kind in FRAME_ATTENTION, f"frame attention {kind!r} is not one of {FRAME_ATTENTION} (sparse_causal: "
                                   "Tune-A-Video's, first_frame: Video-P2P's, per_frame: AnimateDiff's)")
    return kind


def check_group_norm(kind: str) -> str:
    check(kind in GROUP_NORMS, f"group norm {kind!r} is not one of {GROUP_NORMS} (clip: statistics over the whole "
                               "clip, Tune-A-Video's; frame: over each frame, AnimateDiff v2/v3's)")
    return kind


def previous_frame(frame: int) -> int:
    """The frame whose keys a frame takes besides frame 0's: the one before it (frame 0 takes itself)."""
    return max(frame - 1, 0)


def sparse_causal(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Keys/values for sparse-causal attention: frame i sees [frame 0 ‖ frame i-1]; frame 0 sees [0 ‖ 0].

    ``(b f) n c -> (b f) 2n c``; applied to the outputs of ``attn1.to_k`` and ``attn1.to_v``.
    """
    x = rearrange(x, "(b f) n c -> b f n c", f=num_frames)
    previous = (torch.arange(num_frames, device=x.device) - 1).clamp(min=0)
    first = x[:, :1].expand(-1, num_frames, -1, -1)
    return rearrange(torch.cat([first, x[:, previous]], dim=2), "b f n c -> (b f) n c")


def first_frame(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Keys/values of Video-P2P's ``FrameAttention``: every frame sees frame 0 alone. ``(b f) n c -> (b f) n c``."""
    x = rearrange(x, "(b f) n c -> b f n c", f=num_frames)
    return rearrange(x[:, [0] * num_frames], "b f n c -> (b f) n c")


def sparse_causal_window(x: torch.Tensor, window, layer, first_only: bool = False) -> torch.Tensor:
    """``sparse_causal`` (``first_only``: ``first_frame``) for a window of a longer clip (``tav_core.sampling.windows.Window``):
    frame i of the clip sees [frame 0 ‖ frame i-1] of the clip; the rows of frames outside the window come from ``window.anchors`` (computed
    by an earlier window of this evaluation), and this window's rows that later windows need are kept there. A frame
    whose anchor or previous frame no earlier window computed (windows run out of clip order) takes the window's
    first frame as anchor and itself as previous, as a clip starting there would."""
    f = len(window.indices)
    x = rearrange(x, "(b f) n c -> b f n c", f=f)
    keys = window.clip_keys(x.shape[0])
    position = {frame: p for p, frame in enumerate(window.indices)}
    pool = [x]

    def source(frame: int, fallback: int) -> int:
        if frame not in position:
            rows = [window.anchors.lookup(layer, k, frame) for k in keys]
            if any(r is None for r in rows):
                return fallback
            pool.append(torch.stack(rows)[:, None].to(x))
            position[frame] = f + len(pool) - 2
        return position[frame]

    anchor = source(0, 0)
    previous = [] if first_only else [source(previous_frame(i), p) for p, i in enumerate(window.indices)]
    frames = torch.cat(pool, dim=1)
    out = frames[:, [anchor] * f]
    if not first_only:
        out = torch.cat([out, frames[:, previous]], dim=2)
    recompute = torch._C._current_graph_task_id() != -1  # gradient checkpointing's, in the backward: rows are kept
    for p, frame in enumerate(window.indices):
        if window.anchors.needed(frame) and not recompute:
            for j, k in enumerate(keys):
                window.anchors.store(layer, k, frame, x[j, p])
    return rearrange(out, "b f n c -> (b f) n c")


PLAIN_KEYS, PLAIN_HEAD_WIDTH = (16, 24), 40  # where the plain path was faster on this project's CPU


def plain_is_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether ``plain_attention`` beats the fused kernel for this call, as measured on this project's CPU (``python
    -m bench.attention``, inputs laid out as the UNet's projections give them): in float32 on the CPU without
    gradients, 16-24 keys in heads up to 40 wide, the temporal attention of 16-24 frames at SD1.5's largest latent
    side and of the small models (1.15-1.6x). With gradients (tuning), at 8 frames or 32 and beyond, in wider heads
    and over long sequences the fused kernel is as fast or faster."""
    return (q.device.type == "cpu" and q.dtype == torch.float32 and q.shape[-1] <= PLAIN_HEAD_WIDTH
            and PLAIN_KEYS[0] <= k.shape[-2] <= PLAIN_KEYS[1] and not (torch.is_grad_enabled() and q.requires_grad))


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention on ``(..., tokens, dim)``, by the faster path for the shape (the same maths)."""
    return plain_attention(q, k, v) if plain_is_faster(q, k) else F.scaled_dot_product_attention(q, k, v)


class TemporalAttention(nn.Module):
    """Self-attention over the frame axis of each spatial position, no positional encoding.

    Parameter names follow the reference (``to_q``, ``to_k``, ``to_v``, ``to_out.0``). The output projection
    starts at zero, weight as in the reference and bias too (the reference leaves a small random bias), so a
    freshly inflated model computes exactly what the image model did.
    """

    attention = staticmethod(attend)  # the path per shape; benchmarks swap in plain math to compare

    def __init__(self, dim: int, heads: int, dim_head: int, device=None, dtype=None):
        super().__init__()
        inner, like = heads * dim_head, dict(device=device, dtype=dtype)
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False, **like)
        self.to_k = nn.Linear(dim, inner, bias=False, **like)
        self.to_v = nn.Linear(dim, inner, bias=False, **like)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, **like), nn.Dropout(0.0)])
        nn.init.zeros_(self.to_out[0].weight)
        nn.init.zeros_(self.to_out[0].bias)

    control = None  # a callable (q, k, v, heads) -> out on (positions, frames, heads * dim): attention control

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (positions, frames, dim)."""
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if self.control is not None:
            return self.to_out[0](self.control(q, k, v, self.heads))
        q, k, v = (rearrange(t, "b f (h d) -> b h f d", h=self.heads) for t in (q, k, v))
        out = self.attention(q, k, v)
        return self.to_out[0](rearrange(out, "b h f d -> b f (h d)"))


def temporal_residual(x: torch.Tensor, norm: nn.Module, attn: TemporalAttention, num_frames: int) -> torch.Tensor:
    """``x + attn(norm(x))`` taken over frames at every token: ``(b f) n c -> (b f) n c``."""
    tokens = x.shape[1]
    h = rearrange(x, "(b f) n c -> (b n) f c", f=num_frames)
    h = h + attn(norm(h.to(norm.weight.dtype))).to(h.dtype)  # the layers may be kept in higher precision
    return rearrange(h, "(b n) f c -> (b f) n c", n=tokens)


def clip_group_norm_in(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Lay a ``(b f) c h w`` batch out as ``b c (f h) w`` so a GroupNorm takes statistics over the whole clip."""
    return rearrange(x, "(b f) c h w -> b c (f h) w", f=num_frames)


def clip_group_norm_out(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    return rearrange(x, "b c (f h) w -> (b f) c h w", f=num_frames)
