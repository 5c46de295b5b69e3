"""The engine a cell records (prunegen.engine): which source files count, and that the
digest follows them and nothing else."""

import shutil
import subprocess
import sys

from prunegen import engine


def _module(rel: str) -> str:
    """'pruning/__init__' -> 'prunegen.pruning', 'training' -> 'prunegen.training'."""
    return ".".join(["prunegen", *rel.removesuffix("__init__").strip("/").split("/")]).rstrip(".")


def test_the_engine_is_exactly_the_modules_a_cell_run_imports():
    # a cell run: prunegen.cell, and what it imports lazily (TIE's removed rows, the control arms)
    code = ("import sys, prunegen.cell, prunegen.tie, prunegen.controls; "
            "print(' '.join(m for m in sys.modules if m == 'prunegen' or m.startswith('prunegen.')))")
    imported = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout.split())
    counted = {_module(p.relative_to(engine.PACKAGE).with_suffix("").as_posix())
               for p in engine.engine_files() if p.suffix == ".py"}
    assert counted == imported
    package = {p.relative_to(engine.PACKAGE).with_suffix("").as_posix() for p in engine.PACKAGE.rglob("*.py")}
    assert engine.NOT_ENGINE <= package  # no stale names in the list


def test_the_digest_follows_the_engine_source_and_nothing_else(tmp_path):
    copy = tmp_path / "prunegen"
    shutil.copytree(engine.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    digest = engine.source_digest.__wrapped__
    before = digest(copy)
    assert before == engine.source_digest() and len(before) == 12

    (copy / "figures.py").write_text((copy / "figures.py").read_text() + "\n# a reporting change\n")
    assert digest(copy) == before
    (copy / "training.py").write_text((copy / "training.py").read_text() + "\n# a training-loop change\n")
    changed = digest(copy)
    assert changed != before
    schema = copy / "study.schema.yaml"
    schema.write_text(schema.read_text() + "\n# a default changed\n")
    assert digest(copy) not in (before, changed)
