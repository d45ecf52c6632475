"""The package's shape (issue 15): imports point one way, no cycle, no module past 400 lines.

Imports are read from the source (every ``import`` statement, lazy ones inside functions
included), so a cycle hidden behind a function-level import is still found.
"""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "keras_fgvc")
LOW = {"data", "layers", "losses", "metrics"}  # may not import the ones below
HIGH = {"training", "models", "serving", "export", "bootstrap", "demo"}
MAX_LINES = 400


def _modules():
    found = {}
    root = os.path.dirname(PACKAGE)
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def _graph():
    modules = _modules()
    edges = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from a.b import c`: c is the submodule a.b.c when one exists, else a name
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    edges[module].add(name)
    return edges


def _area(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycle(edges):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_cycle():
    # A package __init__ that imports its submodules is not a cycle unless one imports back.
    edges = _graph()
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


def test_low_layers_import_nothing_above_them():
    upward = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                    if _area(m) in LOW and _area(t) in HIGH)
    assert not upward, upward


def test_server_modules_import_no_training_or_model_code():
    # The loopback server serves SavedModels; it needs neither Keras models nor the trainer.
    bad = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                 if _area(m) == "serving" and _area(t) in {"training", "models", "layers",
                                                           "losses"})
    assert not bad, bad


def test_no_module_past_400_lines():
    long = {m: n for m, path in _modules().items()
            if (n := sum(1 for _ in open(path))) > MAX_LINES}
    assert not long, long


def test_the_checks_see_a_planted_cycle_and_arrow():
    edges = {"keras_fgvc.data.a": {"keras_fgvc.training.b"},
             "keras_fgvc.training.b": {"keras_fgvc.data.a"}}
    assert _cycle(edges) in (["keras_fgvc.data.a", "keras_fgvc.training.b", "keras_fgvc.data.a"],
                             ["keras_fgvc.training.b", "keras_fgvc.data.a",
                              "keras_fgvc.training.b"])
    assert _area("keras_fgvc.data.a") in LOW and _area("keras_fgvc.training.b") in HIGH
