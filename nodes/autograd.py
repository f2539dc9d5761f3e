"""ComfyUI's UNet under autograd: nodes run in ``torch.inference_mode()``; tuning and null-text inversion leave
it, load the MODEL as ComfyUI would, and use ComfyUI's own weight-function mechanism (as its LoRA trainer does)
so the query projections come from trainable tensors and frozen inference tensors are copied where autograd
needs them, and only there."""

from contextlib import contextmanager, nullcontext
from functools import partial

import torch
import torch.utils.checkpoint

from . import host
from .conditioning import adm_width, call_unet
from .video_model import diffusion_model


def keep(weight: torch.Tensor) -> torch.Tensor:
    """A weight function that changes nothing: ComfyUI copies a weight that has any function (outside inference
    mode, a tensor autograd can keep)."""
    return weight


@contextmanager
def trainable_weights(unet: torch.nn.Module, queries: dict[str, torch.nn.Parameter], frozen_copy: str = "inference"):
    """While inside: each query projection computes with its tensor in ``queries`` (keys ``<module>.weight``), or
    with what its function there makes of its weight.

    A frozen weight is used as it is, unless it is an inference tensor (made under ``torch.inference_mode()``,
    which autograd cannot keep for backward): those get ``keep``, so ComfyUI's cast copies them, once per use.
    ``frozen_copy="all"`` copies every frozen weight so (what a model loaded in inference mode costs). Weight
    functions already there (low-VRAM LoRA patches) stay first."""
    saved = []  # (module, attribute, its own value before or None)

    def add(m, attr, function):
        saved.append((m, attr, m.__dict__.get(attr)))
        setattr(m, attr, [*getattr(m, attr), function])

    for name, m in unet.named_modules():
        if not hasattr(m, "weight_function"):
            continue
        q = queries.get(f"{name}.weight")
        copy = lambda t: t is not None and (frozen_copy == "all" or t.is_inference())
        if callable(q):  # a weight function of its own (LoRA's ``w + s B A``)
            add(m, "weight_function", q)
        elif q is not None:
            add(m, "weight_function", lambda w, q=q: q.to(w.dtype))
        elif copy(m.weight):
            add(m, "weight_function", keep)
        if copy(getattr(m, "bias", None)):
            add(m, "bias_function", keep)
    try:
        yield
    finally:
        for m, attr, previous in saved:
            if previous is None:
                delattr(m, attr)
            else:
                setattr(m, attr, previous)


@contextmanager
def frozen(unet: torch.nn.Module):
    """While inside, the UNet's own weights take no gradient: ComfyUI leaves ``requires_grad`` on, and autograd would
    otherwise keep every layer's input for a weight gradient, compute it and leave it on the MODEL."""
    previous = [(p, p.requires_grad) for p in unet.parameters()]
    for p, _ in previous:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in previous:
            with torch.inference_mode(p.is_inference()):  # where torch allows an inference tensor's flag back
                p.requires_grad_(flag)


@contextmanager
def checkpointed(unet: torch.nn.Module):
    """Gradient checkpointing while inside, as diffusers checkpoints its UNet: every ResNet block and every transformer
    block (with its video hooks: the temporal attention) recomputes its activations in backward. The host runs a UNet
    level's layers one by one, never the level's own forward, so the layers are what is wrapped."""
    wrapped = []
    for m in unet.modules():
        if isinstance(m, (host.openaimodel.ResBlock, host.attention.BasicTransformerBlock)):
            hooks = dict(m._forward_hooks)  # run inside the checkpoint, not after it
            m._forward_hooks.clear()
            m.forward = partial(torch.utils.checkpoint.checkpoint, partial(_forward_and_hooks, m, hooks),
                                use_reentrant=False)
            wrapped.append((m, hooks))
    try:
        yield
    finally:
        for m, hooks in wrapped:
            del m.forward
            m._forward_hooks.update(hooks)


def _forward_and_hooks(module: torch.nn.Module, hooks: dict, *args, **kwargs):
    """What calling ``module`` computes: its own forward, then its forward hooks."""
    out = type(module).forward(module, *args, **kwargs)
    for hook in hooks.values():
        result = hook(module, args, out)
        out = out if result is None else result
    return out


@contextmanager
def autograd_unet(model, queries: dict[str, torch.Tensor] | None = None, gradient_checkpointing: bool = False):
    """Inside: ``(unet_fn(x, t, packed conditioning), device, dtype)`` for the MODEL's diffusion model loaded as
    ComfyUI loads it (patches applied), usable with autograd; ``queries`` (ModelPatcher key -> tensor, or weight
    function) stand in for those query projections. Outside inference mode, as the stock trainer runs."""
    with torch.inference_mode(False), torch.enable_grad():
        host.model_management.load_models_gpu([model], force_full_load=True)
        device, dtype = model.load_device, model.model.manual_cast_dtype or model.model.get_dtype()
        unet, adm = diffusion_model(model), adm_width(model)

        def unet_fn(x, t, c):  # c: a packed conditioning (nodes.conditioning)
            return call_unet(unet, x, t, c, adm, dtype)

        with frozen(unet), \
                trainable_weights(unet, {k.removeprefix("diffusion_model."): q for k, q in (queries or {}).items()}), \
                (checkpointed(unet) if gradient_checkpointing else nullcontext()):
            yield unet_fn, device, dtype
