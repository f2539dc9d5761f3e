"""LoRA tuning in ComfyUI's own MODEL (imported as its server imports it, the tiny SD1.5 checkpoint): One-Shot Tune's
run with method lora, saved, loaded back at strength 1 and 0, and its file given to the stock LoRA loader. Prints JSON:
how far each loaded MODEL's query projections and temporal layers are from the tuned MODEL's and from the base's."""

import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
from in_process import CHECKPOINT, import_pack  # noqa: E402

rank = int(sys.argv[1]) if len(sys.argv) > 1 else 4
import_pack()
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
from tav_pack.nodes.memory_plan import fit_comfy_tuning, plan_comfy_tuning  # noqa: E402
from tav_pack.nodes.tuned_weights import load_tuned_model, save_tuned_model, tuned_clone  # noqa: E402
from tav_pack.nodes.tuning import tune_model  # noqa: E402
from tav_pack.nodes.video_model import inflate_model, patched_weight, query_names, temporal_layers  # noqa: E402
from tav_pack.tav_core.memory.trace import AllocationPeak, Settings  # noqa: E402
from tav_pack.tav_core.tuning.tune import TuneConfig  # noqa: E402



def queries(model) -> dict:
    return {k: patched_weight(model, k) for k in query_names(model)}


def largest(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


with torch.inference_mode():  # as ComfyUI runs nodes
    base = comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0]
    model = inflate_model(base)
    g = torch.Generator().manual_seed(1)
    samples, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(1, 77, 768, generator=g)
    config = TuneConfig(steps=3, seed=5, posterior="mean", learning_rate=1e-2, lora_rank=rank)
    planned_config, _, report = fit_comfy_tuning(model, samples, config, False, "auto")  # One-Shot Tune's plan
    plan = plan_comfy_tuning(model, Settings(2, 64, 64, model.model.get_dtype(), lora_rank=rank,
                                             clone_frozen_weights=True), count_flops=False)
    with AllocationPeak() as measured:
        run, losses = tune_model(model, temporal_layers(model), cond, samples, config)
    tuned = tuned_clone(model, run)
    path = Path(tempfile.mkdtemp()) / "lora.safetensors"
    save_tuned_model(path, model, run, frames=2, width=64, height=64)
    file = comfy.utils.load_torch_file(str(path))
    loaded, meta = load_tuned_model(path, base, 1.0)
    off = load_tuned_model(path, base, 0.0)[0]
    stock = comfy.sd.load_lora_for_models(base, None, file, 1.0, 0)[0]  # what Load LoRA (model only) does
    layers = {"tuned": temporal_layers(tuned).state_dict(), "loaded": temporal_layers(loaded).state_dict(),
              "off": temporal_layers(off).state_dict()}
    base_queries, tuned_queries = queries(base), queries(tuned)
    full_run, _ = tune_model(model, temporal_layers(model), cond, samples, TuneConfig(
        steps=2, seed=5, posterior="mean", learning_rate=1e-2))  # a full-tuning file at strengths 0, 0.5, 1
    full_path = path.with_name("full.safetensors")
    save_tuned_model(full_path, model, full_run, frames=2, width=64, height=64)
    full = {s: load_tuned_model(full_path, base, s)[0] for s in (0.0, 0.5, 1.0)}
    full_tuned = queries(tuned_clone(model, full_run))
    halfway = {k: (base_queries[k] + full_tuned[k]) / 2 for k in base_queries}
    full_out = {s: {k: v for k, v in temporal_layers(m).state_dict().items() if ".to_out." in k} for s, m in full.items()}
    print(json.dumps({
        "losses": losses, "bytes": path.stat().st_size, "report": report, "planned lora": planned_config.lora_rank,
        "planned": plan.trained + plan.optimizer + plan.step_peak, "measured": measured.peak, "blocks": len(query_names(base)) // 2, "keys": len(file), "rank": meta["lora_rank"],
        "spatial keys": sum(k.startswith("lora_unet_") for k in file),
        "tuned moved queries": largest(tuned_queries, base_queries),
        "loaded vs tuned queries": largest(queries(loaded), tuned_queries),
        "loaded vs tuned temporal": largest(layers["loaded"], layers["tuned"]),
        "tuned temporal out": max(v.abs().max().item() for k, v in layers["tuned"].items() if ".to_out." in k),
        "stock vs tuned queries": largest(queries(stock), tuned_queries),
        "strength 0 queries equal base": all(torch.equal(v, base_queries[k]) for k, v in queries(off).items()),
        "strength 0 temporal out": max(v.abs().max().item() for k, v in layers["off"].items() if ".to_out." in k),
        "full: strength 0 queries equal base": all(torch.equal(v, base_queries[k]) for k, v in queries(full[0.0]).items()),
        "full: strength 0 temporal out": max(v.abs().max().item() for v in full_out[0.0].values()),
        "full: strength 1 vs tuned queries": largest(queries(full[1.0]), full_tuned),
        "full: strength 0.5 vs halfway queries": largest(queries(full[0.5]), halfway),
        "full: strength 0.5 vs half the temporal out": largest(full_out[0.5], {k: v / 2 for k, v in full_out[1.0].items()}),
        "full: tuned moved queries": largest(full_tuned, base_queries),
    }))
