"""The package's imports run one way: layers / data / engine core -> modeling -> evaluation ->
analysis -> tools, and no module hides an import inside a function except of an optional
third-party dependency (read with `ast`, nothing imported)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "focus_detr"

# rank of each part of the package, lowest first; a module may import its own rank or lower.
# The longest matching prefix wins (an engine entry point that runs models and evaluators ranks
# with the tools).
LAYERS = {
    "focus_detr.layers": 0,
    "focus_detr.data": 0,
    "focus_detr.engine": 0,
    "focus_detr.engine.launch": 4,
    "focus_detr.modeling": 1,
    "focus_detr.integrations": 1,
    "focus_detr.evaluation": 2,
    "focus_detr.analysis": 3,
    "focus_detr.deploy": 3,
    "focus_detr.cli": 4,
    "focus_detr": 4,
}

# imported where needed because they are optional, platform-specific or costly build tooling
OPTIONAL = {
    "onnx",
    "onnxruntime",
    "openvino",
    "fvcore",
    "matplotlib",
    "triton",
    "wandb",
    "timm",
    "ninja",
    "fcntl",
    "torch_ms_deform_attn",
    "torch.utils.cpp_extension",
    "tqdm",
    "detectron2._C",
    "hydra",
    "focus_detr.layers.ms_deform_attn.triton_kernels",
}


def _rank(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        yield name, package, ast.parse(path.read_text(), str(path))


def _target(node, package: str):
    """Absolute names an import node imports (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    module = node.module
    if node.level:
        base = package.split(".")
        module = ".".join(base[: len(base) - node.level + 1] + ([module] if module else []))
    return [f"{module}.{a.name}" for a in node.names]


def test_no_module_imports_from_a_higher_layer():
    wrong = []
    for name, package, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _target(node, package):
                    if target.startswith("focus_detr") and _rank(target) > _rank(name):
                        wrong.append(f"{name}:{node.lineno} imports {target}")
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_no_function_local_imports_but_optional_dependencies():
    hidden = []
    for name, package, tree in _modules():
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for target in _target(node, package):
                        optional = any(target == o or target.startswith(o + ".") for o in OPTIONAL)
                        if not optional:
                            hidden.append(f"{name}:{node.lineno} imports {target}")
    assert not hidden, "function-local imports:\n" + "\n".join(hidden)
