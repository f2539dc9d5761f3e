"""The import structure: ``tav_core/`` and ``nodes/`` import only downward (each package's ``LAYERS``), without
cycles; every import inside a function says why it is there; only ``nodes/host.py`` reaches into ComfyUI."""

import ast
import functools
from pathlib import Path

import pytest

from support import ROOT

HOST_MODULES = {"comfy", "folder_paths", "server", "nodes", "latent_preview", "execution", "node_helpers", "utils",
                "app", "comfy_extras", "comfy_execution"}


def layers_of(package: str) -> dict[str, int]:
    """Each top-level name of ``package`` (module or subpackage) -> its layer, read from its ``LAYERS``."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    value = next(n.value for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "LAYERS")
    return {name: i for i, names in enumerate(ast.literal_eval(value)) for name in names}


@functools.cache
def modules(package: str) -> dict[str, Path]:
    """Dotted module name (under ``package``) -> file (read once per package)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(package: str):
    """(module, imported name, line, inside a function, file, absolute) of every import of ``package``'s modules; a
    ``from x import y`` gives both x and x.y (y may be a module)."""
    found = modules(package)
    for name, path in found.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{a.name}" for a in node.names]
                targets, absolute = (names if node.module is None else [target, *names]), False
            elif isinstance(node, ast.Import):
                targets, absolute = [a.name for a in node.names], True
            elif isinstance(node, ast.ImportFrom):
                targets, absolute = [node.module] + [f"{node.module}.{a.name}" for a in node.names], True
            else:
                continue
            for target in targets:
                yield name, target, node.lineno, id(node) in inner, path, absolute


def own(package: str, target: str, absolute: bool) -> str | None:
    """The module of this package an import names (None: another package, the package itself, or a name inside a
    module). ``nodes/`` reaches ``tav_core`` relatively (``..tav_core``): that is another package."""
    if package == "nodes" and absolute:
        return None  # ComfyUI's own top-level ``nodes`` module, not this package
    return target if target in modules(package) and target != package else None


def layer(package: str, module: str, table: dict[str, int]) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return table[top]


@pytest.mark.parametrize("package", ["tav_core", "nodes"])
def test_every_module_has_a_layer(package):
    table = layers_of(package)
    tops = {m.split(".")[1] if "." in m else "__init__" for m in modules(package)}
    assert tops <= set(table), \
        f"{package}: {sorted(tops - set(table))} in no layer; add them to {package}/__init__.py LAYERS"


@pytest.mark.parametrize("package", ["tav_core", "nodes"])
def test_imports_go_only_downward_and_never_in_a_circle(package):
    table = layers_of(package)
    graph, upward = {}, []
    for module, target, line, _, path, absolute in imports(package):
        target = own(package, target, absolute)
        if target is None or target == module:
            continue
        graph.setdefault(module, set()).add(target)
        if layer(package, target, table) > layer(package, module, table):
            upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} (layer {layer(package, target, table)}) "
                          f"from layer {layer(package, module, table)}")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None
    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", ["tav_core", "nodes"])
def test_every_import_inside_a_function_says_why(package):
    """Only where it keeps ``tuneavideo --help`` (or a refused option) light; a comment on its line, or on the line
    that opens its group of imports, says so."""
    silent = []
    for module, target, line, inner, path, _ in imports(package):
        if not inner:
            continue
        lines = path.read_text().split("\n")
        i = line - 1
        while not lines[i].strip().startswith("#") and "#" not in lines[i] and \
                lines[i].strip().startswith(("from ", "import ")):
            i -= 1
        if not (lines[i].strip().startswith("#") or "#" in lines[i]):
            silent.append(f"{path.relative_to(ROOT)}:{line} {lines[line - 1].strip()}")
    assert not silent, "imports inside functions with no comment saying why:\n" + "\n".join(sorted(set(silent)))


def test_only_the_host_module_reaches_into_comfyui():
    reaching = [f"{path.relative_to(ROOT)}:{line} imports {target}" for module, target, line, _, path, absolute
                in imports("nodes") if absolute and target.split(".")[0] in HOST_MODULES and module != "nodes.host"]
    assert not reaching, "ComfyUI internals outside nodes/host.py:\n" + "\n".join(reaching)


def test_the_library_names_come_from_the_top_package():
    """``from tav_core import ...`` as the README's Library section writes it, whatever subpackage a name lives in."""
    import tav_core
    snippet = (ROOT / "README.md").read_text().split("from tav_core import ", 1)[1].split("\n", 1)[0]
    assert set(snippet.split(", ")) <= set(tav_core.__all__)
    for name in tav_core.__all__:
        assert getattr(tav_core, name).__name__ == name
