"""Import hygiene: importing the pipeline (what run.py, sweeps and notebooks do first) must not
import TensorFlow Datasets or TensorFlow; those load only when a dataset is loaded."""

import ast
import pathlib
import subprocess
import sys

_PROBE = """
import sys
import ltr_jax.pipeline
heavy = sorted(m for m in ("tensorflow_datasets", "tensorflow") if m in sys.modules)
print(",".join(heavy))
"""


def test_pipeline_import_does_not_import_tfds():
    # A fresh interpreter: the test process itself has imported TFDS through other tests.
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=root,
    )
    assert done.stdout.strip() == "", f"imported at `import ltr_jax.pipeline`: {done.stdout}"


# --------------------------------------------------------------------------------------------
# The import graph: no circle, and no import that runs back up a layer.

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first: a module may import its own layer and the layers below, never one above.
# Every module of ltr_jax/ is in one (the longest prefix decides); a new module gets a place.
LAYERS = (
    ("ltr_jax.errors", "ltr_jax.registry", "ltr_jax.data.pixels"),  # leaves
    (
        "ltr_jax.runtime",
        "ltr_jax.workdir",
        "ltr_jax.stopping",
        "ltr_jax.writers",
        "ltr_jax.param_groups",
        "ltr_jax.dpp",
        "ltr_jax.losses",
        "ltr_jax.models",
    ),
    ("ltr_jax.data.datasets",),  # get the data, make it long-tailed
    ("ltr_jax.data.input",),  # what the stages see
    ("ltr_jax.config_lib", "ltr_jax.metrics", "ltr_jax.checkpointing", "ltr_jax.train_lib"),
    ("ltr_jax.validation",),
    ("ltr_jax.stages",),
    ("ltr_jax.pipeline",),
    ("ltr_jax.inference",),  # a finished run's classifier
    (  # the command lines on top
        "ltr_jax.report",
        "ltr_jax.sweep",
        "ltr_jax.predict",
        "ltr_jax.evaluate",
        "ltr_jax.export",
        "ltr_jax.report_figures",
    ),
)
_PACKAGES = ("ltr_jax", "ltr_jax.data")  # namespace __init__ files: no imports, no layer


def module_files(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """``dotted module name -> file`` of every module of ltr_jax/ (a package: its __init__)."""
    files = {}
    for path in (root / "ltr_jax").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def import_edges(files: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """``module -> the ltr_jax modules it imports``, imports inside functions included (so a
    function-level import cannot hide a circle): ``from a.b import c`` counts as ``a.b.c``
    when that is a module, else as ``a.b``."""
    edges = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    targets.add(full if full in files else node.module)
        edges[name] = {t for t in targets if t in files and t != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import circle (its modules, the first repeated at the end), or [] when none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of the longest prefix of ``module``; None for a bare package."""
    best, depth = None, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    return best


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a module ``b`` from a layer above ``a``'s."""
    bad = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            if layer_of(b) is not None and layer_of(a) is not None and layer_of(b) > layer_of(a):
                bad.append(f"{a} -> {b}")
    return bad


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files() if layer_of(m) is None and m not in _PACKAGES]
    assert not unplaced, f"add these modules to tests/test_imports.py LAYERS: {unplaced}"


def test_the_import_graph_has_no_circle():
    cycle = find_cycle(import_edges(module_files()))
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_no_import_runs_back_up_a_layer():
    bad = upward_imports(import_edges(module_files()))
    assert not bad, f"imports of a layer above: {bad}"


def test_the_data_layers_meet_in_one_arrow():
    # The dataset layer imports only itself and the leaves; the input layer reaches it through
    # its records and its registry's `load` alone.
    edges = import_edges(module_files())
    leaves = set(LAYERS[0])
    for a, targets in edges.items():
        if a.startswith("ltr_jax.data.datasets"):
            outside = {b for b in targets if not b.startswith("ltr_jax.data.datasets")} - leaves
            assert not outside, f"{a} imports {outside}"
        if a.startswith("ltr_jax.data.input"):
            into = {b for b in targets if b.startswith("ltr_jax.data.datasets")}
            assert into <= {"ltr_jax.data.datasets.records", "ltr_jax.data.datasets.registry"}, a


def test_the_checks_find_a_circle_and_an_upward_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    up = {"ltr_jax.data.datasets.long_tail": {"ltr_jax.validation"}, "ltr_jax.validation": set()}
    assert upward_imports(up) == ["ltr_jax.data.datasets.long_tail -> ltr_jax.validation"]
