"""The import graph of hatch_vlm: layers, no cycles between subpackages, no production use of test helpers.

Every module is found from the file tree (other work moves files: nothing here lists modules by hand) and
its imports are read with `ast`, function-local imports included, plus `importlib.import_module` calls
on a literal or f-string name. The checker is tested on small planted trees first, so a green run means
the rules were applied, not that the parser saw nothing.

The layers of hatch_vlm, lowest first (LAYERS below). A module may import its own layer and lower ones,
never a higher one:

    layer     modules                          why it sits there
    utils     hatch_vlm.utils                  config errors, atomic I/O, process groups: used by all, uses none
    geometry  hatch_vlm.geometry               the camera conventions and the viewer Motion; numpy only
    scoring   hatch_vlm.scoring                answer / category rules the readers, ActoR and eval share
    data      hatch_vlm.data                   Sample, readers, writers, synthetic scenes (uses geometry, scoring)
    models    hatch_vlm.models                 the tiny Qwen2.5-VL and the one load path (imports no hatch_vlm)
    pasta     hatch_vlm.pasta                  cell embeddings of a model + the ops' loss on data
    actor     hatch_vlm.actor                  actions, rewards, SFT / GRPO; PaStA's loss comes in as a callable
    eval      hatch_vlm.eval                   generates with ActoR's prompts, scores with scoring, tabulates
    pipeline  hatch_vlm.pipeline               runs the stages above in order, writes the report
    rehearse  hatch_vlm.rehearse               runs the pipeline's stages at real size, measures, plans GPUs
    cli       hatch_vlm.cli, __main__,         command-line front ends: wire everything, imported by nothing
              hatch_vlm.commands

The package's own `hatch_vlm/__init__.py` (a version string) is layer-free. A new subpackage must be added
to the table (the test says so) rather than fall through unchecked.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY_ROOT = REPO / "python"
EXT_ROOT = REPO

# (layer, module-name patterns). A pattern is a dotted module prefix. A module named `cli` inside a subpackage
# belongs to that subpackage's layer like any other (no exception: the front ends live in hatch_vlm.commands).
LAYERS = (
    ("utils", ("hatch_vlm.utils",)),
    ("geometry", ("hatch_vlm.geometry",)),
    ("scoring", ("hatch_vlm.scoring",)),
    ("data", ("hatch_vlm.data",)),
    ("models", ("hatch_vlm.models",)),
    ("pasta", ("hatch_vlm.pasta",)),
    ("actor", ("hatch_vlm.actor",)),
    ("eval", ("hatch_vlm.eval",)),
    ("pipeline", ("hatch_vlm.pipeline",)),
    ("rehearse", ("hatch_vlm.rehearse",)),
    ("cli", ("hatch_vlm.cli", "hatch_vlm.__main__", "hatch_vlm.commands")),
)
LAYER_FREE = ("hatch_vlm",)         # the package __init__: a docstring and __version__
# Test helpers and the naive reference of the ops: production code (hatch_vlm, and hatch_ext's own modules
# other than these) must not import them.
TEST_ONLY = ("hatch_ext.testing", "hatch_ext.reference")
# hatch_ext/__init__.py exposes `hatch_ext.reference` as a documented attribute for users' tests and the
# benchmarks (it does not use it); that is the one allowed edge, and it is not ours to change here.
TEST_ONLY_EXEMPT = {("hatch_ext", "hatch_ext.reference")}


# ------------------------------------------------------------------------------------------ the checker
def modules_under(root: Path, package: str) -> dict[str, Path]:
    """{dotted name: file} of every .py file of `package` under `root` (package dirs = those with an
    __init__.py on the way down)."""
    out = {}
    base = root / package
    for f in sorted(base.rglob("*.py")):
        rel = f.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if any(p == "__pycache__" for p in parts):
            continue
        # only files reachable as modules: every directory above must be a package
        if not all((root.joinpath(*parts[:k]) / "__init__.py").exists() for k in range(1, len(parts))):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _import_module_target(call: ast.Call) -> str | None:
    """The (prefix of the) module named by `importlib.import_module("x.y")` / `import_module(f"x.y.{z}")`."""
    fn = call.func
    name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
    if name != "import_module" or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return prefix.rsplit(".", 1)[0] if "." in prefix else None    # "a.b.{x}" -> the package a.b
    return None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules `module` imports anywhere in its file (top level, functions, TYPE_CHECKING blocks).

    `from a import b` counts as importing `a.b` when that is a module of the tree, else `a`."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module or "")
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Call):
            target = _import_module_target(node)
            if target:
                found.add(target)
    found.discard(module)
    return found


def layer_of(module: str, layers=LAYERS) -> str | None:
    best, best_len = None, -1
    for layer, patterns in layers:
        for p in patterns:
            hit = module == p or module.startswith(p + ".")
            n = len(p)
            if hit and n > best_len:
                best, best_len = layer, n
    return best


def _owner(target: str, modules: set[str]) -> str | None:
    """The module of the tree `target` names (itself, or the package an attribute import came from)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


@dataclass
class Report:
    unassigned: list[str] = field(default_factory=list)
    upward: list[str] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    test_only: list[str] = field(default_factory=list)
    reverse: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unassigned or self.upward or self.cycles or self.test_only or self.reverse)

    def __str__(self) -> str:
        parts = []
        for name in ("unassigned", "upward", "test_only", "reverse"):
            if getattr(self, name):
                parts.append(f"{name}:\n  " + "\n  ".join(getattr(self, name)))
        if self.cycles:
            parts.append("cycles between subpackages:\n  " + "\n  ".join(" -> ".join(c) for c in self.cycles))
        return "\n".join(parts) or "ok"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(py_root: Path, ext_root: Path | None, package: str = "hatch_vlm", ext_package: str = "hatch_ext",
          layers=LAYERS, layer_free=LAYER_FREE, test_only=TEST_ONLY, exempt=frozenset(TEST_ONLY_EXEMPT)) -> Report:
    """Apply the three rules to the trees `py_root/package` (layered) and `ext_root/ext_package`."""
    rep = Report()
    mods = modules_under(py_root, package)
    ext = modules_under(ext_root, ext_package) if ext_root is not None and (ext_root / ext_package).is_dir() else {}
    known = set(mods) | set(ext)
    order = {name: k for k, (name, _) in enumerate(layers)}
    unit_graph: dict[str, set[str]] = {}
    for m, path in mods.items():
        lm = None if m in layer_free else layer_of(m, layers)
        if lm is None and m not in layer_free:
            rep.unassigned.append(f"{m} ({path.relative_to(py_root)}): in no layer; add its subpackage to LAYERS")
            continue
        for target in sorted(imports_of(m, path, known)):
            if any(target == t or target.startswith(t + ".") for t in test_only):
                rep.test_only.append(f"{m} imports {target}")
            dep = _owner(target, set(mods))
            if dep is None or dep in layer_free:
                continue
            ld = layer_of(dep, layers)
            if lm is None or ld is None:
                continue
            if order[ld] > order[lm]:
                rep.upward.append(f"{m} ({lm}) imports {dep} ({ld}), a higher layer")
            if ld != lm:
                unit_graph.setdefault(lm, set()).add(ld)
    for m, path in ext.items():
        for target in sorted(imports_of(m, path, known)):
            if m in test_only:
                pass            # the test helpers may use each other
            elif any(target == t or target.startswith(t + ".") for t in test_only) and (m, target) not in exempt:
                rep.test_only.append(f"{m} imports {target}")
            if target == package or target.startswith(package + "."):
                rep.reverse.append(f"{m} imports {target}: {ext_package} must never depend on {package}")
    rep.cycles = _cycles(unit_graph)
    return rep


# ------------------------------------------------------------------------------------ the checker, tested
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root


MINI_LAYERS = (("low", ("pkg.low",)), ("high", ("pkg.high",)), ("cli", ("pkg.cli", "pkg.commands")))
CLEAN = {
    "py/pkg/__init__.py": "",
    "py/pkg/low/__init__.py": "",
    "py/pkg/low/a.py": "import os\nfrom . import b\n",
    "py/pkg/low/b.py": "X = 1\n",
    "py/pkg/commands/__init__.py": "",
    "py/pkg/commands/low.py": "def main():\n    from pkg.high import c\n",     # a front end may reach up
    "py/pkg/high/__init__.py": "from ..low import a\n",
    "py/pkg/high/c.py": "from pkg.low.b import X\nimport importlib\n",
    "py/pkg/cli.py": "from pkg.high import c\n",
    "ext/ext/__init__.py": "from . import ops\n",
    "ext/ext/ops.py": "",
    "ext/ext/testing.py": "from .ops import *\n",
}


def _mini(tmp_path, extra: dict[str, str]) -> Report:
    root = _tree(tmp_path, {**CLEAN, **extra})
    return check(root / "py", root / "ext", "pkg", "ext", layers=MINI_LAYERS, layer_free=("pkg",),
                 test_only=("ext.testing",), exempt=frozenset())


def test_checker_passes_a_clean_tree(tmp_path):
    rep = _mini(tmp_path, {})
    assert rep.ok, str(rep)


@pytest.mark.parametrize("planted, kind, needle", [
    # an upward import hidden in a function body
    ({"py/pkg/low/b.py": "def f():\n    from pkg.high.c import Y\n"}, "upward", "pkg.low.b (low) imports pkg.high.c"),
    # relative, two levels up, at module level
    ({"py/pkg/low/b.py": "from ..high import c\n"}, "upward", "pkg.low.b (low) imports pkg.high.c"),
    # by name, through importlib with an f-string
    ({"py/pkg/low/b.py": "import importlib\nm = importlib.import_module(f'pkg.high.{1}')\n"}, "upward",
     "pkg.low.b (low) imports pkg.high"),
    # a production module using the test helpers, and the helper package depending on the framework
    ({"py/pkg/high/d.py": "from ext.testing import thing\n"}, "test_only", "pkg.high.d imports ext.testing"),
    ({"ext/ext/ops.py": "import pkg.low.a\n"}, "reverse", "ext.ops imports pkg.low.a"),
    # a front end kept inside a lower subpackage is that subpackage's module: the data -> eval tie of data/cli.py
    ({"py/pkg/low/cli.py": "def main():\n    from pkg.high import c\n"}, "upward", "pkg.low.cli (low) imports pkg.high.c"),
    # a subpackage nobody placed in a layer
    ({"py/pkg/new/__init__.py": "", "py/pkg/new/x.py": ""}, "unassigned", "pkg.new.x"),
])
def test_checker_catches_planted_violations(tmp_path, planted, kind, needle):
    rep = _mini(tmp_path, planted)
    assert not rep.ok
    assert any(needle in line for line in getattr(rep, kind)), str(rep)


def test_checker_finds_a_cycle_between_subpackages(tmp_path):
    # a imports b (upward: a is the lower layer) and b imports a back, in a function: a cycle a <-> b,
    # reported as such beside the upward edge that makes it.
    layers = (("a", ("pkg.a",)), ("b", ("pkg.b",)))
    root = _tree(tmp_path, {"py/pkg/__init__.py": "", "py/pkg/a/__init__.py": "from pkg.b import y\n",
                            "py/pkg/b/__init__.py": "def f():\n    import pkg.a\n", "py/pkg/b/y.py": ""})
    rep = check(root / "py", None, "pkg", layers=layers, layer_free=("pkg",))
    assert rep.cycles == [["a", "b", "a"]], str(rep)
    assert rep.upward == ["pkg.a (a) imports pkg.b.y (b), a higher layer"], str(rep)


def test_modules_come_from_the_file_tree():
    mods = modules_under(PY_ROOT, "hatch_vlm")
    # a few that must be seen (a package, a nested package, a plain module), and the count is the tree's
    assert {"hatch_vlm", "hatch_vlm.data.spar7m", "hatch_vlm.geometry"} <= set(mods)
    on_disk = [f for f in (PY_ROOT / "hatch_vlm").rglob("*.py") if "__pycache__" not in f.parts]
    assert len(mods) == len(on_disk)


# ---------------------------------------------------------------------------------------- the real tree
def test_hatch_vlm_layers_cycles_and_test_helpers():
    rep = check(PY_ROOT, EXT_ROOT)
    assert rep.ok, "\n" + str(rep)


def test_actor_does_not_import_eval():
    """The old cycle (actor.rewards -> eval.answers, eval.run -> actor.*): actor is below eval now."""
    mods = modules_under(PY_ROOT, "hatch_vlm")
    for m, path in mods.items():
        if m.startswith("hatch_vlm.actor"):
            bad = [t for t in imports_of(m, path, set(mods)) if t.startswith("hatch_vlm.eval")]
            assert not bad, f"{m} imports {bad}"


# ------------------------------------------------------------ what the moved code computes did not change
def test_production_symmetric_overlap_equals_the_reference():
    """pasta.metrics forms S from the real op's M as the reference does: identical values, so the
    correspondence metric's counts (valid rows, hits, ties) are the same as before the move."""
    import torch

    from hatch_ext import ops, reference
    from hatch_ext.scenes import room_scene
    from hatch_vlm.pasta.metrics import match_statistics, symmetric_overlap

    for seed, (B, V, H, W), invalid in ((1, (2, 3, 23, 31), 0.1), (5, (1, 4, 21, 17), 0.0), (9, (2, 2, 28, 28), 0.05)):
        s = room_scene(B, V, H, W, seed=seed, occluders=2, invalid_fraction=invalid)
        M = ops.patch_overlap(s.depth, s.K, s.cam_to_world, 4)
        assert torch.equal(M, reference.patch_overlap(s.depth, s.K, s.cam_to_world, 4))
        for dt in (torch.float32, torch.float64):
            assert torch.equal(symmetric_overlap(M.to(dt)), reference.symmetric_overlap(M.to(dt)))
        emb = torch.randn(B, V, 16, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        stats = match_statistics(emb, M)
        assert int(stats["hit"].numel()) == int(reference.valid_rows(M.double()).sum())


def test_scene_rigs_have_one_home():
    """hatch_ext.testing re-exports the rigs of hatch_ext.scenes (the README imports them from testing)."""
    from hatch_ext import scenes, testing

    for name in ("Scene", "intrinsics", "look_pose", "render_depth", "room_scene", "plane_pair"):
        assert getattr(testing, name) is getattr(scenes, name)


# ---------------------------------------------------------------------------------------- module circles
def module_cycles(py_root: Path, package: str = "hatch_vlm") -> list[list[str]]:
    """Import cycles between modules (files) of `package`, function-local imports included. A package's
    __init__ importing its own submodules, and a submodule importing its package, are the package's own
    structure and not counted; any other circle is (e.g. models.adapters -> models.processor -> back)."""
    mods = modules_under(py_root, package)
    known = set(mods)
    graph = {}
    for m, path in mods.items():
        graph[m] = {o for t in imports_of(m, path, known) if (o := _owner(t, known)) and o != m
                    and not o.startswith(m + ".") and not m.startswith(o + ".")}
    return _cycles(graph)


def test_module_cycle_checker_finds_a_planted_circle(tmp_path):
    # the shape of the old one: a package (adapters) reaching a sibling module (processor) that imports it back
    files = {"py/pkg/__init__.py": "", "py/pkg/m/__init__.py": "from .a import f\ndef h():\n    from ..p import g\n",
             "py/pkg/m/a.py": "def f():\n    pass\n", "py/pkg/p.py": "def g():\n    from pkg.m import f\n"}
    assert module_cycles(_tree(tmp_path / "circle", files) / "py", "pkg"), "the planted circle was not found"
    # a package importing its own submodules (and they it) is its structure, not a circle
    own = {**files, "py/pkg/p.py": "", "py/pkg/m/b.py": "from pkg.m import f\n"}
    assert module_cycles(_tree(tmp_path / "own", own) / "py", "pkg") == []


def test_no_import_circle_between_modules():
    assert module_cycles(PY_ROOT) == []
