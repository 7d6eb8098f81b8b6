"""The package layout: no import circles (function-local and type-only imports count too),
no Gradio in core/, and the small public API at the package root."""
from __future__ import annotations

import ast
from pathlib import Path

import torch

import core
from core.settings import PROJECT_ROOT

CORE = PROJECT_ROOT / "core"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every core module this file imports, wherever the import statement stands."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}   # "from . import shapes" names a module
    return {m for m in found if m.startswith("core")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {m for m in _imports(path) if m in modules and m != name}
        # importing a package's submodule runs the package's __init__ first: that edge is real
        graph[name] = targets - {"core"} if name.count(".") else targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None
    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles_in_core():
    graph = _graph()
    # package __init__ files re-export their children: the edge parent -> child is expected,
    # a child importing its own package's __init__ would close a circle, so drop only parent->child
    for name in list(graph):
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_core_never_imports_gradio():
    offenders = [str(p) for p in CORE.rglob("*.py") if "gradio" in {m.split(".")[0] for m in _all_imports(p)}]
    assert not offenders


def _all_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_errors_have_one_home():
    for path in CORE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name.endswith("Error")]
        assert not defined, f"{path} defines {defined}; errors live in core/errors.py"


def test_public_api():
    from core import Workbench, load_encoder, open_library  # noqa: F401  the documented entry points
    assert {"load_encoder", "open_library", "Workbench", "build_workbench", "SearchQuery"} <= set(core.__all__)


def test_ui_reaches_core_only_through_the_front_door():
    """ui/ may import core's public names, its errors and constants, never the library or ingest internals."""
    allowed = {"core", "core.access", "core.errors", "core.lru", "core.messages", "core.settings", "core.images", "core.library.search",
               "core.zeroshot"}
    for path in (PROJECT_ROOT / "ui").rglob("*.py"):
        used = {m for m in _all_imports(path) if m.startswith("core")}
        assert used <= allowed, f"{path.name} imports {sorted(used - allowed)}"


def test_load_encoder_is_the_documented_entry_point(tiny_clip_path):
    """`from core import load_encoder`; load_encoder(path, device="cpu") -> encode_texts / encode_images
    giving L2-normalised float32 [N, D] on the CPU."""
    from PIL import Image
    enc = core.load_encoder(str(tiny_clip_path), device="cpu")
    texts = enc.encode_texts(["a cat", "一只猫", ""])
    images = enc.encode_images([Image.new("RGB", (40, 30), (200, 10, 10))])
    for out, n in ((texts, 3), (images, 1)):
        assert out.shape == (n, enc.dim) and out.dtype == torch.float32 and out.device.type == "cpu"
        assert torch.allclose(out.norm(dim=-1), torch.ones(n), atol=1e-5)


# Floors of core, lowest first: a module may import its own floor and the ones below, never one above.
# The front door (core.workbench) is the top of the engine; the package root re-exports it lazily.
FLOORS = [
    {"core.errors", "core.messages", "core.lru", "core.lazy", "core.settings", "core.monitor"},   # words, limits, the device, the counters
    {"core.images", "core.models", "core.batching"},                               # decoding, the encoders
    {"core.language", "core.zeroshot", "core.starters", "core.library"},           # what the encoders serve
    {"core.lab", "core.scale", "core.hosting", "core.access", "core.policy", "core.safety", "core.health"},   # beside the library, the rules
    {"core.workbench"},                                                            # the front door
    {"core.holder", "core", "core.__main__", "core.train", "core.evaluate"},       # one per server, the package
]
ENTRY_SHIMS = {"core/__main__.py", "core/train.py", "core/evaluate.py"}   # hand `python -m core...` to cli/


def _floor(module: str) -> int:
    parts = module.split(".")
    for i, floor in enumerate(FLOORS):
        if module in floor or ".".join(parts[:2]) in floor:
            return i
    raise AssertionError(f"{module} is on no floor of FLOORS: add it")


def test_no_upward_imports_in_core():
    upward = [f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _floor(b) > _floor(a)]
    assert not upward, f"upward imports: {upward}"


def test_adapters_sit_on_top():
    """core never imports an adapter (ui/, cli/, demo.py) but for its `python -m` entry shims; the
    adapters never import each other; the command line has no Gradio."""
    for path in CORE.rglob("*.py"):
        if path.relative_to(PROJECT_ROOT).as_posix() in ENTRY_SHIMS:
            continue
        tops = {m.split(".")[0] for m in _all_imports(path)}
        assert not tops & {"ui", "cli", "demo"}, f"{path} imports an adapter: {sorted(tops & {'ui', 'cli', 'demo'})}"
    for package, others in (("ui", {"cli", "demo"}), ("cli", {"ui", "demo", "gradio"})):
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            tops = {m.split(".")[0] for m in _all_imports(path)}
            assert not tops & others, f"{path} imports {sorted(tops & others)}"


def test_the_architecture_page_names_modules_that_exist_each_once():
    """docs/ARCHITECTURE.md walks an upload and a query through the layers: every module or folder
    it names exists, and its text names each one once (the picture at the top may repeat them)."""
    import re
    text = (PROJECT_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    path = r"[\w]+(?:/[\w]+)*(?:\.py|/)"
    named = re.findall(rf"(?<![\w/]){path}(?![\w/])", text)
    assert len(named) > 20 and {"core/workbench.py", "core/policy.py", "core/holder.py"} <= set(named)
    missing = sorted({p for p in named if not (PROJECT_ROOT / p).exists()})
    assert not missing, f"docs/ARCHITECTURE.md names what does not exist: {missing}"
    prose = re.findall(rf"`({path})`", re.sub(r"```.*?```", "", text, flags=re.S))
    twice = sorted({p for p in prose if prose.count(p) > 1})
    assert not twice, f"docs/ARCHITECTURE.md names these more than once: {twice}"
