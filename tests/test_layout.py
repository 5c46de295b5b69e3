"""The layout's rules, checked: five packages, each importing only what it may (read from
the source, function-local imports included, and confirmed in a fresh interpreter), no
import cycle among prunegen's modules, and every function-local import with its reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "prunegen"
PLUGIN = REPO / "snakemake_executor_plugin_prunegen"
STAGES = ("study", "records", "engine", "analysis", "cluster")
# package -> the prunegen packages it may import (besides itself), and what it must never import
MAY = {"study": set(), "records": {"study"}, "engine": {"study", "records"}, "analysis": {"study", "records"},
       "cluster": {"study", "records", "engine"}}
NEVER = {"study": {"torch", "pandas", "pyarrow", "numpy"}, "records": {"torch"},
         "engine": {"snakemake", "submitit"}, "analysis": {"torch"}, "cluster": set()}
# the cluster modules that may import the engine: calibrate times it, a warm worker runs it
ENGINE_USERS = {"prunegen.cluster.calibrate", "prunegen.cluster.worker"}


def modules(root: Path = PACKAGE, prefix: str = "prunegen") -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = p.relative_to(root).with_suffix("").parts
        name = ".".join((prefix, *parts[:-1])) if parts[-1] == "__init__" else ".".join((prefix, *parts))
        out[name] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in the file, resolved the
    way Python resolves it: relative imports against the module's package, and
    `from package import name` to the submodule where `name` is one."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body} | {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub if sub in known else mod, node.lineno, id(node) in top))
    return out


def graph() -> dict[str, set[str]]:
    known = {**modules(), **modules(PLUGIN, PLUGIN.name)}
    return {m: {i for i, _, _ in imports(m, p, set(known)) if i in known and i != m} for m, p in known.items()}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "prunegen" and parts[1] in STAGES else None


def test_the_package_holds_cli_and_the_five_stages_and_nothing_else():
    top = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", "cli.py", *STAGES}
    root = ast.parse((PACKAGE / "__init__.py").read_text())
    assert not [n for n in root.body if isinstance(n, (ast.Import, ast.ImportFrom))]  # a map, no re-exports
    assert [n.name for n in root.body if isinstance(n, ast.FunctionDef)] == ["open"]  # and the results API


@pytest.mark.parametrize("package", STAGES)
def test_a_package_imports_only_the_packages_it_may(package):
    known = {**modules(), **modules(PLUGIN, PLUGIN.name)}
    wrong = []
    for name, path in modules().items():
        if stage(name) != package:
            continue
        for imported, line, _ in imports(name, path, set(known)):
            other = stage(imported)
            root = imported.split(".")[0]
            if imported == "prunegen":  # the root package: its version, and no imports
                continue
            if root == "prunegen" and other is None:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {imported} (above the stages)")
            elif package == "cluster" and other == "engine" and name not in ENGINE_USERS:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {imported} (the cluster side runs the engine "
                             "in calibrate and worker only)")
            elif other is not None and other != package and other not in MAY[package]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {imported}")
            elif root in NEVER[package] or root == PLUGIN.name:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {imported}")
    assert wrong == []


def test_the_executor_plugin_reaches_prunegen_only_through_the_cluster_side():
    known = {**modules(), **modules(PLUGIN, PLUGIN.name)}
    for name, path in modules(PLUGIN, PLUGIN.name).items():
        for imported, line, _ in imports(name, path, set(known)):
            if imported.startswith("prunegen"):
                assert stage(imported) == "cluster", f"{path.relative_to(REPO)}:{line}: {imported}"


def test_no_import_cycle_among_the_modules():
    g = graph()
    index, low, on, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == []


def test_every_import_inside_a_function_says_why():
    """A function-local import is a choice (a heavy library kept out of a command that needs
    none of it, say): a comment on its line, or directly above its block of imports, says
    which."""
    silent = []
    for path in [*modules().values(), *modules(PLUGIN, PLUGIN.name).values()]:
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    i = node.lineno - 1
                    said = "#" in lines[i]
                    while not said and i > 0:  # up through the block of imports it belongs to
                        i -= 1
                        text = lines[i].strip()
                        if text.startswith("#"):
                            said = True
                        elif not (text.startswith(("import ", "from ")) or text == "" or text.endswith((",", "(", ")"))
                                  or text[:1].isidentifier() and text.endswith(",")):
                            break
                    if not said:
                        silent.append(f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert silent == []


def _fresh(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return set(out.stdout.split())


def _import_all(packages: tuple[str, ...]) -> str:
    names = [m for m in modules() if stage(m) in packages]
    return "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in names) + \
        "print(' '.join(sys.modules))"


def test_study_records_and_analysis_load_without_torch():
    loaded = _fresh(_import_all(("study", "records", "analysis")))
    assert "torch" not in loaded
    study_only = _fresh(_import_all(("study",)))
    assert not {"torch", "pandas", "pyarrow", "numpy"} & study_only


def test_the_engine_loads_without_snakemake_submitit_the_cluster_side_or_the_analysis():
    loaded = _fresh(_import_all(("engine",)))
    assert "torch" in loaded  # the check sees what was imported
    assert not {"snakemake", "submitit", "prunegen.cluster", "prunegen.analysis"} & loaded
