"""What the tests share: where things are (the repo, ComfyUI, the test models), the test models' names, the
project's tolerance rule for numerical assertions, and small helpers. Fixtures live in the conftest files.

The tolerance rule: bit-equality only for one computation repeated in one process (same code path, shapes and model
instance) or for saved and copied values. Anything else is held to a tolerance a stated factor above a measured
rounding floor: how far the reference computation's output moves when its inputs move by one ulp (``nudge``); or,
for short computations, above a stated bound. CFG, DDIM chains and optimisers amplify rounding: measure, don't guess.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMFYUI = Path(os.environ.get("TAV_COMFYUI", ROOT / ".cache" / "ComfyUI"))
TEST_MODELS = ROOT / ".cache" / "test-models"
COMFY_SCRIPTS = ROOT / "tests" / "comfy"  # scripts run in their own process with ComfyUI imported

CKPT, CONTROLNET, IP2P = "tiny-sd15.safetensors", "tiny-sd15-controlnet.safetensors", "tiny-ip2p-unet.safetensors"
CLIP_VISION, CLIP_TEXT = "test-clip-vit-l.safetensors", "test-clip-l.safetensors"
SDXL_CKPT = "tiny-sdxl.safetensors"  # ComfyUI recognises it through tests/comfy/tav_test_tiny_sdxl.py
TUNED = "test-skiing_00001_.safetensors"  # the first file One-Shot Tune saves under the name "test-skiing"
FRAMES, SIZE = 4, 64  # what the server tests shrink the shared workflows to

EPS = torch.finfo(torch.float32).eps  # float32 ulp at 1.0 (2^-23)


def nudge(x: torch.Tensor) -> torch.Tensor:
    """``x + |x| eps``: every element moved by about one ulp of its dtype."""
    return x + x.abs() * torch.finfo(x.dtype).eps


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Max abs difference over the largest magnitude of ``theirs``."""
    return max_abs(ours, theirs) / theirs.abs().max().item()


def within(error: float, floor: float, factor: float, what: str) -> bool:
    """``error <= factor * floor`` (a floor of 0 would demand bit-equality: refused); prints the numbers."""
    ratio = error / floor if floor else float("inf")
    print(f"{what}: difference {error:.2e}, rounding floor {floor:.2e} ({ratio:.2g}x), limit {factor:g}x")
    return 0 < floor and error <= factor * floor


def randomize_temporal(unet, seed=1):
    """Give every temporal layer non-zero weights, so tests see what the temporal attention does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "attn_temp" in name or "norm_temp" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if name.endswith("norm_temp.weight") else 0))


def module_at(path: Path):
    """The Python file at ``path`` as a module (a script beside the ones it belongs with, not on the path)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_comfyui(script: str, *args, timeout: float = 1800):
    """Run ``tests/comfy/<script>`` (it imports ComfyUI and the pack in its own process) and return what it printed
    last, as JSON."""
    out = subprocess.run([sys.executable, str(COMFY_SCRIPTS / script), *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as f:
        for block in (2 ** 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError:
                pass
    return filler


def reference_inversion(unet, scheduler, latents, cond, steps, prediction_type):
    """tuneavideo/util.py (ddim_loop + next_step) restated loop by loop, in DDPM space. For v-prediction the
    model's output is turned into eps first (the reference, written for eps models, would use v as eps)."""
    scheduler.set_timesteps(steps)
    z = latents.clone()
    for i in range(steps):
        t = scheduler.timesteps[len(scheduler.timesteps) - i - 1]
        prev_t = t - scheduler.config.num_train_timesteps // steps
        a_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        a_t = scheduler.alphas_cumprod[t]
        out = unet(z, t.expand(len(z)), cond)
        eps = out if prediction_type == "epsilon" else (1 - a_t).sqrt() * z + a_t.sqrt() * out
        x0 = (z - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        z = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    return z


def reference_sampling(unet, scheduler, z, cond, uncond, scale, steps):
    """pipeline_tuneavideo.py's denoising loop: CFG over [uncond, cond], then DDIMScheduler.step."""
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        u, c = unet(torch.cat([z, z]), t.expand(2 * len(z)), torch.cat([uncond, cond])).chunk(2)
        z = scheduler.step(u + scale * (c - u), t, z).prev_sample
    return z
