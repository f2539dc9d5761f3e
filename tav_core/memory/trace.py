"""Memory and compute of Tune-A-Video's steps, planned without weights or a GPU.

A step is traced on fake tensors (torch's ``FakeTensorMode``: shapes and dtypes, no data) of the real
architecture. torch's flop counter counts its FLOPs; saved-tensor hooks count what autograd keeps for backward; a
dispatch-level tracker follows every storage the step allocates and frees, which gives the step's peak. What stays
resident (weights by dtype, trained tensors, AdamW's two moments) is counted from the tensors themselves.

Fake CPU tensors stand in for CUDA ones (autograd cannot run on fake CUDA tensors without a GPU): autocast follows
CPU's op lists, except that a plan for CUDA runs GroupNorm and LayerNorm in float32 as CUDA's autocast does
(``as_on_cuda``), and attention is CPU flash attention, which like the GPU's flash and memory-efficient kernels keeps
memory linear in the tokens; a plan for the CPU traces the CPU's plain path where it runs (the temporal attention
of 16-24 frames in inference, ``tav_core.model.attention.plain_is_faster``), a plan for a GPU the fused kernel
(``as_on_device``). The total is what CUDA would have allocated; the CUDA context (~0.3-0.5 GB) and the
allocator's fragmentation come on top.
"""

import warnings
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..editing.pipeline import vae_dtype
from ..loading.motion import planned_module
from ..loading.tuned import lora_layers, video_parameters
from ..model.attention import TemporalAttention
from ..model.conditioning import context_tokens, pooled_width, unet_inputs
from ..model.inflation import inflate, transformer_blocks
from ..model.lora import MOTION, SPATIAL, TEMPORAL, add_adapters, motion_holders
from ..sampling.windows import ContextWindows

aten = torch.ops.aten
DEVICE = torch.ops.prim.device.default


def _sdpa_flops(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _sdpa_backward_flops(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


_sdpa_flops._get_raw = _sdpa_backward_flops._get_raw = True
# CPU flash attention (what SDPA runs on fake CPU tensors) counted as torch counts the GPU's attention kernels
FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
         aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops}


@dataclass(frozen=True)
class Settings:
    """One configuration of a stage: the clip, the precision and the memory options."""
    frames: int
    height: int = 512
    width: int = 512
    weights_dtype: torch.dtype = torch.float32   # frozen weights
    mixed_precision: str = "no"                  # autocast of the passes: "no", "fp16", "bf16"
    gradient_checkpointing: bool = False         # tuning and null-text inversion
    frame_window: int | None = None              # tuning: tune on runs of this many frames
    lora_rank: int | None = None                 # tuning: LoRA adapters of this rank instead of the layers
    clone_frozen_weights: bool = False           # ComfyUI's old path: every frozen weight copied for autograd
    windows: ContextWindows | None = None        # inference stages: overlapping frame windows
    batch_cfg: bool = True                       # CFG's two halves in one pass
    vae_tiling: bool = False                     # VAE stages: tiles instead of whole frames
    steps: int = 50                              # DDIM steps (null-text keeps every inverted latent)

    @property
    def step_frames(self) -> int:
        return min(self.frames, self.frame_window or self.frames)


@dataclass
class Plan:
    """Bytes of one steady-state tuning step (AdamW's state exists; gradients are freed after each step)."""
    frozen: dict[str, int]          # resident frozen weights, by dtype
    trained: int                    # the tuned tensors (fp32)
    optimizer: int                  # AdamW's two moments
    gradients: int                  # the tuned tensors' gradients
    saved: int                      # activations autograd keeps from forward to backward
    step_peak: int                  # everything the step itself allocates, at its peak
    flops: int                      # forward + backward + optimizer
    extra: dict[str, int] = field(default_factory=dict)  # other peaks (e.g. the reference's VAE encoding)
    held: int = 0                   # what the stage keeps for the whole clip beside the step (latents, trajectories)

    @property
    def transient(self) -> int:
        """At the step's peak, what is neither kept activations nor gradients (attention and norm temporaries)."""
        return max(0, self.step_peak - self.saved - self.gradients)

    @property
    def resident(self) -> int:
        return sum(self.frozen.values()) + self.trained + self.optimizer

    @property
    def total(self) -> int:
        return self.resident + self.held + max([self.step_peak, *self.extra.values()])


class AllocationPeak(TorchDispatchMode):
    """While inside: the live bytes of the tensor storages that ops allocate, and their peak. Views and in-place
    results share an input's storage and are not counted; a storage counts until its last tensor is gone. Exact on
    real tensors of any device (a measurement) and on fake ones (a plan, where ``.item()`` reads 1 so that code
    checking values runs through)."""

    active: list["AllocationPeak"] = []  # the trackers entered, innermost last

    def __init__(self):
        super().__init__()
        self.live, self.current, self.peak = {}, 0, 0  # (``current`` may count freed storages: read ``in_use``)
        self.scan_at = 4096  # a scan for freed storages at latest when this many are tracked

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is DEVICE and isinstance(args[0], FakeTensor) and not args[0].fake_mode.in_kernel_invocation:
            return args[0].fake_device  # as the fake mode answers it (half the ops a plan sees are this query)
        if func is aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
            return _stand_in(args[0])  # a plan needs no values: .item() of a fake tensor reads as one
        out = func(*args, **kwargs)
        new, inputs = {}, None
        for t in _tensors(out):
            storage = t.untyped_storage()
            key = storage._cdata  # (a storage tracked here keeps its address: its weak reference holds it)
            if key not in self.live:
                if inputs is None:  # (only here: most outputs are new or views of tracked storages)
                    inputs = {i.untyped_storage()._cdata for i in _tensors((args, kwargs))}
                if key not in inputs:
                    new[key] = (StorageWeakRef(storage), storage.nbytes())
        added = sum(n for _, n in new.values())
        # ``current`` may still count storages freed since the last scan: only where that could matter (a new
        # peak) or the list grows long is it scanned, so the peak stays exact at a fraction of the scans
        if self.current + added > self.peak or len(self.live) >= self.scan_at:
            self._forget_freed()
        self.live.update(new)
        self.current += added
        self.peak = max(self.peak, self.current)
        return out

    def _forget_freed(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        self.scan_at = max(4096, 2 * len(self.live))

    def __enter__(self):
        AllocationPeak.active.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        AllocationPeak.active.remove(self)
        return super().__exit__(*exc)

    @property
    def in_use(self) -> int:
        """Bytes of the storages allocated inside that are still alive now."""
        self._forget_freed()
        return self.current

    def reach(self, above: int) -> None:
        """Count a peak of ``above`` bytes over what is in use now (a replayed pass, ``tav_core.memory.replay``)."""
        self.peak = max(self.peak, self.in_use + above)


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in an op's arguments or results (tensors, scalars and None in tuples, lists and dicts): what
    ``tree_leaves`` finds there, in a fraction of its time (a plan dispatches ~10^5 ops)."""
    if isinstance(value, torch.Tensor):
        return [value]
    found = []
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ():
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple, dict)):
            found.extend(_tensors(item))
    return found


def _stand_in(tensor: torch.Tensor):
    if tensor.dtype == torch.bool:
        return True
    return 1.0 if tensor.is_floating_point() else 1


def _keys(tensors) -> set[int]:
    return {t.untyped_storage()._cdata for t in tensors}


def _float32_norm(norm: nn.Module):
    """``norm``'s forward as CUDA's autocast runs it: input, weight and bias in float32, a float32 result."""
    float32 = lambda t: None if t is None else t.float()
    group = isinstance(norm, nn.GroupNorm)

    def forward(x):
        if not (torch.is_autocast_enabled("cpu") and x.dtype in (torch.float16, torch.bfloat16)):
            return type(norm).forward(norm, x)
        with torch.autocast("cpu", enabled=False):
            if group:
                return F.group_norm(x.float(), norm.num_groups, float32(norm.weight), float32(norm.bias), norm.eps)
            return F.layer_norm(x.float(), norm.normalized_shape, float32(norm.weight), float32(norm.bias), norm.eps)
    return forward


def as_on_device(modules, device_type: str) -> None:
    """Make these (fake) modules compute as on ``device_type`` where CPU fake tensors would differ: off the CPU the
    temporal attention takes the fused kernel (its CPU plain path keeps the attention weights), and on CUDA the norms
    run in float32 under autocast (``as_on_cuda``)."""
    if device_type == "cpu":
        return
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, TemporalAttention):
                layer.attention = F.scaled_dot_product_attention
    if device_type == "cuda":
        as_on_cuda(modules)


def as_on_cuda(modules) -> None:
    """Make these (fake) modules' GroupNorm and LayerNorm layers compute under autocast as on CUDA: CUDA's autocast
    runs them in float32 (its fp32 list), CPU's in the input's half precision, and autograd keeps their float32
    results. Measured on an H200 (SD1.5, 8 frames of 512x512, fp16 autocast): the tensors a tuning step saves came to
    11526 MB, 9916 as CPU autocast plans it, 11526 so (docs/benchmarks.md). A forward set on each layer, so gradient
    checkpointing's recompute runs it too."""
    for module in modules:
        for norm in module.modules():
            if isinstance(norm, (nn.GroupNorm, nn.LayerNorm)):
                norm.forward = _float32_norm(norm)


@contextmanager
def planning():
    """Build the modules to plan inside this block: their tensors are fake (no memory, no data)."""
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():  # callers may be in either
        warnings.simplefilter("ignore")
        with FakeTensorMode() as mode:
            yield mode


def cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module.to(dtype)`` for fake modules (whose parameters cannot be swapped)."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.is_floating_point():
            t.data = t.data.to(dtype)
    return module


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def plan_tuning(modules: list[nn.Module], unet_fn: Callable, trained: dict[str, nn.Parameter], video: Callable,
                latent_shape: tuple, context_shape: tuple, settings: Settings,
                checkpointed: Callable = nullcontext, count_flops: bool = True) -> Plan:
    """Trace a steady-state tuning step of ``unet_fn(x, t, context)`` (inside ``planning()``, on its fake modules).

    ``modules`` are what stays resident (UNet and what else the path keeps on the device); ``video(frames)`` is the
    inflation's context; ``checkpointed()`` turns gradient checkpointing on while inside. Without ``count_flops``
    (half the time) the plan's ``flops`` is 0.
    """
    frames = settings.step_frames
    params = list(trained.values())
    for m in modules:
        m.requires_grad_(False)  # frozen: autograd keeps nothing for their gradients
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-2)
    autocast = (torch.autocast("cpu", torch.float16 if settings.mixed_precision == "fp16" else torch.bfloat16)
                if settings.mixed_precision != "no" else nullcontext())
    x = torch.randn(frames, *latent_shape[1:])
    context = torch.randn(1, *context_shape[1:]).expand(frames, -1, -1)  # as tune() gives it
    t = torch.full((frames,), 500, dtype=torch.long)
    trained_keys = _keys(params)

    def step(counting):
        with video(frames), checkpointed():
            saved = {}

            def pack(tensor):
                key = tensor.untyped_storage()._cdata
                if key not in resident:
                    saved[key] = tensor.untyped_storage().nbytes()
                return tensor
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor) if counting else nullcontext():
                with autocast:
                    prediction = unet_fn(x, t, context)
                loss = F.mse_loss(prediction.float(), x)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sum(saved.values())

    resident = _keys(p for m in modules for p in m.parameters()) | trained_keys
    if count_flops:
        counter = FlopCounterMode(display=False, custom_mapping=FLOPS)
        with counter:  # a first step makes AdamW's state; the flop counter's module tracking keeps activations
            step(counting=False)  # alive, so memory is traced in a second one
    else:  # AdamW's state as a first step leaves it (every tuned tensor gets a gradient), without the step (half
        # the planning time)
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.ndim]
    with AllocationPeak() as tracker:
        saved = step(counting=True)
    for p in params:
        p.requires_grad_(False)
    return Plan(frozen_bytes(modules, trained_keys), _bytes(params), _bytes(state), _bytes(params), saved, tracker.peak,
                counter.get_total_flops() if count_flops else 0)


def frozen_bytes(modules, trained_keys: set[int]) -> dict[str, int]:
    """Bytes of the modules' weights that are not trained (storages not in ``trained_keys``), by dtype name."""
    frozen: dict[str, int] = {}
    for m in modules:
        for p in m.parameters():
            if p.untyped_storage()._cdata not in trained_keys:
                name = str(p.dtype).removeprefix("torch.")
                frozen[name] = frozen.get(name, 0) + p.numel() * p.element_size()
    return frozen


def inference_flops(unet_fn: Callable, latent_shape: tuple, context_shape: tuple, batch: int, video: Callable,
                    autocast_dtype: torch.dtype | None = None) -> tuple[int, int]:
    """(FLOPs, peak bytes) of one UNet evaluation on ``batch`` rows (frames, or 2 x frames with CFG)."""
    frames = latent_shape[0]
    x, context = torch.randn(batch, *latent_shape[1:]), torch.randn(batch, *context_shape[1:])
    t = torch.full((batch,), 500, dtype=torch.long)
    autocast = torch.autocast("cpu", autocast_dtype) if autocast_dtype else nullcontext()
    with torch.no_grad(), video(frames), autocast:
        with FlopCounterMode(display=False, custom_mapping=FLOPS) as counter:
            unet_fn(x, t, context)
        with AllocationPeak() as tracker:
            unet_fn(x, t, context)
    return counter.get_total_flops(), tracker.peak


def _resident_dtype(unet_config: dict, config: dict, dtype: torch.dtype) -> torch.dtype:
    """A resident module's dtype beside weights of ``dtype``: SDXL's VAE stays fp32 (``pipeline.vae_dtype``)."""
    return vae_dtype(unet_config, config, dtype) if "latent_channels" in config else dtype


def plan_pipeline(unet_config: dict, settings: Settings, resident_configs: tuple = (), count_flops: bool = True,
                  motion: dict | None = None, device_type: str = "cuda") -> Plan:
    """Plan the headless pipeline's tuning step for a diffusers UNet config: frozen weights in
    ``settings.weights_dtype``, tuned tensors in fp32, as ``TuneAVideo`` keeps them. ``resident_configs``:
    (build, config) of the other modules on the device (VAE, text encoder): ``build(config)`` makes one.
    ``motion``: the motion module's (``tav_core.loading.motion.motion_config``) as the temporal layers; ``device_type``:
    where it runs (``as_on_device``: on a GPU fused attention; on CUDA float32 norms under autocast)."""

    with planning():
        unet = cast(UNet2DConditionModel.from_config(unet_config), settings.weights_dtype)
        module = planned_module(motion, settings.weights_dtype) if motion else None
        inflation = inflate(unet, motion=module)
        trained = video_parameters(unet, trainable_only=True)
        for p in trained.values():
            p.data = p.data.float()
        if settings.lora_rank is not None:  # as TuneAVideo tunes LoRA: adapters on those layers, frozen in the
            blocks = [block for _, block in transformer_blocks(unet)]  # weights' precision
            adapted = {f"{layer}.weight" for layer in lora_layers(unet)}
            for key, p in trained.items():
                if key in adapted:
                    p.data = p.data.to(settings.weights_dtype)
            trained = add_adapters(blocks, SPATIAL + (TEMPORAL if module is None else ()), settings.lora_rank, None)
            if module is not None:
                trained.update(add_adapters(motion_holders(module.adapter), MOTION, settings.lora_rank, None))
        others = [cast(cls(config), _resident_dtype(unet_config, config, settings.weights_dtype))
                  for cls, config in resident_configs]
        if settings.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        latent_shape = (settings.frames, unet.config.in_channels, settings.height // 8, settings.width // 8)
        context_shape = (1, context_tokens(unet.config), unet.config.cross_attention_dim)

        def unet_fn(x, t, context):
            x = x.to(settings.weights_dtype)
            context, added = unet_inputs(context.to(settings.weights_dtype), x, pooled_width(unet.config))
            return unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
        modules = [unet, *others] + ([module.adapter] if module is not None else [])
        as_on_device(modules, device_type)
        return plan_tuning(modules, unet_fn, trained, inflation.video, latent_shape, context_shape, settings,
                           count_flops=count_flops)
