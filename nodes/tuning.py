"""One-shot tuning inside a ComfyUI graph: tav_core.tune on the MODEL's own diffusion model (under autograd as
``nodes.autograd`` sets it up). The MODEL given is never changed.
"""

import copy
import logging
import time

import torch

from ..tav_core.charts import loss_chart
from ..tav_core.errors import check
from ..tav_core.memory.duration import LONG, duration_text
from ..tav_core.memory.fit import MEMORY_MODES
from ..tav_core.memory.usage import measured
from ..tav_core.tuning.tune import TuneConfig, recorded, tune
from . import host
from .autograd import autograd_unet
from .conditioning import packed_conditioning
from .memory_plan import compute_precision, fit_comfy_tuning, tuning_forecast
from .shared import (CATEGORY, FOLDER, Schema, check_save_name, finite_floats, hidden, io, preview_with_workflow,
                     require_finite, save_numbered, seed_input, show_report, show_text)
from .tuned_weights import Trainable, finish, require_untuned, save_tuned_model, trainable, tuned_clone
from .video_model import PREDICTION, alphas_cumprod, diffusion_model, require_inflated, video_hooks


def scheduler_config(model) -> dict:
    """The MODEL's own noise schedule, as a diffusers config (betas from its sigmas); of a MODEL
    ``require_supported`` took (eps or v prediction)."""
    alphas = alphas_cumprod(model, torch.float64)
    betas = 1 - alphas / torch.cat([torch.ones(1, dtype=alphas.dtype), alphas[:-1]])
    return {"num_train_timesteps": len(alphas), "trained_betas": betas.tolist(),
            "prediction_type": PREDICTION[model.model.model_type]}


def tune_model(model, layers, cond: torch.Tensor, samples: torch.Tensor, config: TuneConfig,
               gradient_checkpointing: bool = False, callback=None) -> tuple[Trainable, list[float]]:
    """Train copies of the MODEL's temporal layers and query projections (or LoRA adapters on them: ``config``);
    returns what was trained (``nodes.tuned_weights``) and the losses. The MODEL itself is left as it was."""
    if config.lora_rank is not None:
        require_untuned(layers)
    with torch.inference_mode(False):
        run = trainable(model, copy.deepcopy(layers).to(model.load_device, torch.float32), config, model.load_device)
    with video_hooks(diffusion_model(model)) as hooks, \
            autograd_unet(model, run.weights, gradient_checkpointing) as (unet_fn, device, dtype):
        if config.mixed_precision == "no":  # half-precision weights need autocast and the gradient scaler
            config.mixed_precision = compute_precision(model)
        latents = model.model.process_latent_in(samples.clone()).to(device, torch.float32)
        losses = tune(unet_fn, run.params, lambda f: run.layers.video(hooks, f), latents,
                      cond.clone().to(device, torch.float32), scheduler_config(model), config, callback,
                      frozen=run.frozen)
    return finish(run, config), losses


CANCELLED: dict[str, str] = {}  # node id -> "step/steps" its last run was cancelled at


def say(unique_id, text: str) -> None:
    """A line under the node that the server log keeps too (what happened to a run, not its progress)."""
    show_text(unique_id, text)
    logging.info("One-Shot Tune: %s", text)


class OneShotTune(io.ComfyNode):
    TITLE = "One-Shot Tune"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoTune", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["tune", "train", "finetune", "fine-tune", "one-shot", "tune-a-video", "tuneavideo",
                            "video edit"],
            description="Tune-A-Video one-shot tuning: learns the video from its caption by training the query "
                        "projections and the temporal attention, or the whole AnimateDiff motion module of a MODEL "
                        "inflated with one (AdamW, paper defaults; 500 steps take minutes on a GPU). Interruptible. An output node: with a save name it saves the tuned weights to "
                        "models/tuneavideo, so a graph may only tune.",
            inputs=[
                io.Model.Input("model", tooltip="An inflated MODEL (Inflate Model / Load & Inflate Checkpoint)."),
                io.Conditioning.Input("positive", tooltip="Caption of the source video (CLIP Text Encode)."),
                io.Latent.Input("latent_image", tooltip="The source video's latents, one per frame (VAE Encode). VAE "
                                "Encode gives the posterior mean, and every step tunes on it; the reference (and "
                                "'tuneavideo tune') draws a fresh posterior sample each step instead."),
                seed_input("Seed of the tuning draws (timesteps, noise): stays as set, so an unchanged graph is not "
                           "tuned again."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Tuning steps (paper: 500)."),
                io.Float.Input("learning_rate", default=3e-5, min=1e-7, max=1e-2, step=1e-6, round=False,
                               tooltip="AdamW learning rate (paper: 3e-5)."),
                io.String.Input("save_name", default="", tooltip="Saves the tuned weights as models/tuneavideo/"
                                "<name>_00001_.safetensors (numbered like ComfyUI's savers, never overwriting); "
                                "empty: do not save."),
                io.Int.Input("frame_window", default=0, min=0, max=4096, optional=True, tooltip="Tune each step on a "
                             "random run of this many consecutive frames (0: all). Lets long videos fit in memory."),
                io.Boolean.Input("gradient_checkpointing", default=False, optional=True, tooltip="Recompute "
                                 "activations in the backward pass: about half the memory, ~1.7x the step time."),
                io.Combo.Input("memory", options=list(MEMORY_MODES), default="auto", optional=True, tooltip="Before any "
                               "step, the run's peak memory is planned against the free memory of the device. auto: if "
                               "it would not fit, tune with the first of gradient checkpointing, half-precision "
                               "autocast, a shorter frame window that fits (shown on the node and in the console); "
                               "check: refuse instead, saying what would fit; off: no planning."),
                io.Combo.Input("method", options=["full", "lora"], default="full", optional=True, tooltip="full: the "
                               "paper's recipe, the query projections and temporal attention themselves (with a "
                               "motion module: the whole module). lora: low-rank adapters on the query projections "
                               "and the temporal attention (with a motion module: its attentions, MotionDirector's "
                               "targets): a file of megabytes (its image part loads with the stock Load LoRA), less "
                               "memory for gradients and AdamW; not the paper's result."),
                io.Int.Input("lora_rank", default=16, min=1, max=1024, optional=True, tooltip="LoRA's rank (method "
                             "lora): higher learns more and makes bigger files; 4-64 is usual. Its alpha is the rank "
                             "(scale 1)."),
            ],
            outputs=[io.Model.Output(display_name="tuned_model", tooltip="The MODEL with the tuned query projections "
                                     "and temporal layers (the input MODEL is not changed): feed it to DDIM Invert "
                                     "and Video KSampler."),
                     io.Image.Output(display_name="loss_curve", tooltip="The loss of every step and its moving "
                                     "average (also shown on the node): a falling, flattening curve means tuning "
                                     "converged.")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True)  # a graph that only tunes and saves is complete: the saved file is its output

    @classmethod
    def validate_inputs(cls, learning_rate=None):
        return finite_floats(cls, learning_rate=learning_rate)

    @classmethod
    def execute(cls, model, positive, latent_image, seed, steps, learning_rate, save_name, frame_window=0,
                gradient_checkpointing=False, memory="auto", method="full", lora_rank=16) -> io.NodeOutput:
        require_finite(cls, learning_rate=learning_rate)
        unique_id = hidden(cls, "unique_id")
        layers = require_inflated(model, cls.TITLE)
        check(len(positive) >= 1, "positive is empty; connect a CLIP Text Encode of the video's caption")
        name = check_save_name(save_name) if save_name.strip() else None
        config = TuneConfig(steps=steps, learning_rate=learning_rate, seed=seed, frame_window=frame_window or None,
                            posterior="mean",  # a LATENT holds the posterior mean only
                            lora_rank=lora_rank if method == "lora" else None)
        bar = host.utils.ProgressBar(steps, node_id=unique_id)
        done = [0]
        cancelled = CANCELLED.pop(unique_id, None)
        restart = cancelled and f"starting over: the run cancelled at step {cancelled} kept nothing"
        if restart:  # (nothing of a cancelled run is kept: there is no state to resume from)
            say(unique_id, restart)

        def progress(step, loss):
            done[0] = step + 1
            host.model_management.throw_exception_if_processing_interrupted()  # Cancel: stop here, save nothing
            bar.update_absolute(step + 1, steps)
            left = (time.perf_counter() - started) / (step + 1) * (steps - step - 1)  # at the pace so far
            show_text(unique_id, f"step {step + 1}/{steps}  loss {loss:.4f}"
                                 + (f", about {duration_text(left)} left" if step + 1 < steps else ""))

        if config.lora_rank is not None:  # before the memory plan: seconds
            require_untuned(layers)
        samples = latent_image["samples"]
        config, gradient_checkpointing, report = fit_comfy_tuning(model, samples, config, gradient_checkpointing, memory)
        show_report(unique_id, report and f"{cls.TITLE}: {report}")
        if memory != "off":  # how long it will take, before the first step: on a CPU always, elsewhere if long
            predicted, forecast = tuning_forecast(model, samples, config, gradient_checkpointing)
            if model.load_device.type == "cpu" or predicted > LONG:
                logging.info("One-Shot Tune: %s", forecast)
                show_text(unique_id, "\n".join(filter(None, [restart, report, forecast])))
        cond = packed_conditioning(model, positive[0], samples)  # (SDXL: with its ADM vector)
        started = time.perf_counter()
        try:
            with measured(model.load_device, "tuning") as usage:  # (the saved file keeps them: Score Video shows them)
                run, losses = tune_model(model, layers, cond, samples, config, gradient_checkpointing, progress)
        except host.model_management.InterruptProcessingException:
            CANCELLED[unique_id] = f"{done[0]}/{steps}"
            say(unique_id, f"cancelled at step {done[0]}/{steps}: nothing was saved; Run tunes from the start")
            raise
        if name:
            frames, _, h, w = samples.shape
            save_numbered(unique_id, name, FOLDER, "tuned weights", lambda path: save_tuned_model(
                path, model, run, frames=frames, width=w * 8, height=h * 8, tuning=recorded(config),
                final_loss=losses[-1] if losses else None, run=usage))
        curve = torch.from_numpy(loss_chart(losses)).float()[None] / 255
        return io.NodeOutput(tuned_clone(model, run), curve,
                             ui=preview_with_workflow(curve, hidden(cls, "prompt"), hidden(cls, "extra_pnginfo")))
