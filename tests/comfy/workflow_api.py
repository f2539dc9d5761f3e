"""Convert an editor (UI-format) workflow into the API prompt that POST /prompt takes, as the editor does."""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SKIPPED = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def has_control_widget(spec) -> bool:
    """The editor adds a 'control after generate' widget (its value is stored too) to such INT inputs."""
    return spec[0] == "INT" and len(spec) > 1 and bool(spec[1].get("control_after_generate"))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in SKIPPED or node.get("mode", 0) in (2, 4):  # muted or bypassed
            continue
        if node["type"] not in object_info:
            raise ValueError(f"node type {node['type']} is not installed in this ComfyUI")
        info = object_info[node["type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        names = info["input_order"]["required"] + info["input_order"].get("optional", [])
        inputs = {}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                link = links[socket["link"]]
                inputs[socket["name"]] = [str(link[1]), link[2]]
        values, i = list(node.get("widgets_values", [])), 0
        for name in names:
            if not is_widget(specs[name]):
                continue
            if i >= len(values):
                break
            inputs.setdefault(name, values[i])
            i += 2 if has_control_widget(specs[name]) else 1
        missing = [n for n in info["input_order"]["required"] if n not in inputs]
        if missing:
            raise ValueError(f"node {node['id']} ({node['type']}) has no value for {missing}")
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
