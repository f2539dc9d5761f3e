"""The ComfyUI internals the pack relies on (``nodes/host.py``): every one the nodes reach is listed with why; the
running host has each as the pack expects, and a host that changes one is named; the pack changes the host only from
``comfy_entrypoint``; the video hooks are on the shared UNet only while a clip runs through it."""

import ast

from support import ROOT, run_in_comfyui


def host_check(mode: str):
    return run_in_comfyui("host_check.py", mode)


def listed_internals() -> set[str]:
    tree = ast.parse((ROOT / "nodes" / "host.py").read_text())
    table = next(n.value for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "INTERNALS")
    return {ast.literal_eval(k) for k in table.keys}


def reached_through_host() -> dict[str, str]:
    """Every ``host.a.b...`` the node modules write (the longest attribute chain) -> where."""
    found = {}
    for path in sorted((ROOT / "nodes").glob("*.py")):
        tree = ast.parse(path.read_text())
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and id(node) not in inner:
                parts, base = [], node
                while isinstance(base, ast.Attribute):
                    parts.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id == "host" and path.name != "host.py":
                    found.setdefault(".".join(reversed(parts)), f"nodes/{path.name}:{node.lineno}")
    return found


def test_every_internal_the_nodes_reach_is_listed_with_why():
    """Listed, or a module or class on the way to one (passed to the pack's own code, which names the rest)."""
    listed, reached = listed_internals(), reached_through_host()
    host_tree = ast.parse((ROOT / "nodes" / "host.py").read_text())
    own = {n.name for n in host_tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    missing = {name: where for name, where in reached.items() if name not in listed and name.split(".")[0] not in own
               and not any(key.startswith(name + ".") for key in listed)}
    assert len(reached) > 20 and not missing, f"reached through nodes/host.py but not in its INTERNALS: {missing}"


def test_the_host_has_every_internal_as_the_pack_expects():
    assert host_check("drift") == []


def test_a_host_that_changed_an_internal_is_named():
    """Three internals changed as an upgrade could: a function's parameters, an attribute gone, an overridden
    method's signature. Each line names the internal, the version it was checked on and why the pack needs it."""
    lines = host_check("broken")
    assert len(lines) == 3, lines
    for name, how in (("sample.sample_custom", "takes no noise_mask, callback, seed"),
                      ("ops.manual_cast", "ops has no 'manual_cast'"),
                      ("context_windows.IndexListContextHandler.execute", "takes no calc_cond_batch, model_options")):
        assert any(line.startswith(f"ComfyUI internal {name} (checked on 0.3.75): {how}")
                   and "; the pack needs it: " in line for line in lines), (name, lines)


def test_importing_the_pack_changes_nothing_until_its_entrypoint_runs_and_then_once():
    state = host_check("entrypoint")
    assert state["before"] == {"CLIP.load_sd patched": False, "models/tuneavideo registered": False}
    assert state["after"] == {"CLIP.load_sd patched": True, "models/tuneavideo registered": True}
    assert state["patched once"]


def test_video_hooks_are_on_the_shared_unet_only_while_a_clip_runs_through_it():
    counts = host_check("hooks")
    assert counts["before"] == counts["inflated, idle"] == counts["after sampling"] == counts["after tuning"] == 0
    assert counts["while sampling"] > 0 and counts["while tuning"] > 0, counts
