"""Each command imports only what it needs (the model code takes seconds to import): ``score`` none of diffusers,
the tune/edit flows or the memory planner; a run on the built-in tiny model none of diffusers' pipelines or their
single-file loader (only a single-file --model needs them). Module sets, each command in a fresh process; never
timings. (diffusers' model classes themselves import ``diffusers.loaders.single_file_utils``: a UNet brings it.)"""

import json
import subprocess
import sys

from tav_core.video import demo_video, write_video

IMPORTS = ("import json, sys\nfrom tav_core.cli import main\ncode = main(sys.argv[1:])\n"
           "print(json.dumps([code, sorted(sys.modules)]))")


def imported(argv: list[str]) -> set[str]:
    """The modules a fresh process holds once ``tuneavideo argv`` has run (and succeeded)."""
    out = subprocess.run([sys.executable, "-c", IMPORTS, *argv], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0 and out.stdout.strip(), out.stdout + out.stderr
    code, modules = json.loads(out.stdout.splitlines()[-1])
    assert code == 0, out.stdout + out.stderr
    return set(modules)


def under(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


def test_the_names_checked_below_are_what_diffusers_pipelines_import():
    from diffusers import StableDiffusionPipeline  # (here only to see which modules a pipeline brings)
    assert StableDiffusionPipeline.__module__.startswith("diffusers.pipelines.")
    assert "diffusers.loaders.single_file" in sys.modules  # (its from_single_file)


def test_a_run_on_the_tiny_model_imports_no_pipeline_nor_single_file_loader(tmp_path):
    modules = imported(["run", "--frames", "2", "--width", "32", "--height", "32", "--tune-steps", "1", "--steps", "2",
                        "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "e.gif")])
    assert "diffusers.models.unets.unet_2d_condition" in modules and "tav_core.editing.edit" in modules  # (it ran)
    assert not under(modules, "diffusers.pipelines", "diffusers.loaders.single_file")


def test_score_imports_no_diffusers_nor_the_model_flows(tmp_path, clip_folder):
    video = tmp_path / "e.gif"
    write_video(video, demo_video(2, 32, 32))
    modules = imported(["score", "--video", str(video), "--clip", str(clip_folder), "--prompt", "a cat",
                        "--out", str(tmp_path / "s.json")])
    assert "transformers.models.clip.modeling_clip" in modules and (tmp_path / "s.json").is_file()  # (it scored)
    assert not under(modules, "diffusers", "tav_core.cli.commands", "tav_core.editing", "tav_core.tuning",
                     "tav_core.memory.fit", "tav_core.memory.stages", "tav_core.memory.trace",
                     "tav_core.loading.tiny", "tav_core.loading.checkpoints", "tav_core.sampling.schedule")
