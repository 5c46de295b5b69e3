"""The engine a cell records (prunegen.records.provenance): which source files count, that
the digest follows them and nothing else, and the aliases of engines known to compute the
same bits."""

import json
import shutil
import subprocess
import sys

from prunegen.records import provenance


def _module(rel: str) -> str:
    """'engine/pruning/__init__' -> 'prunegen.engine.pruning', 'study/grid' -> 'prunegen.study.grid'."""
    return ".".join(["prunegen", *rel.removesuffix("__init__").strip("/").split("/")]).rstrip(".")


def test_the_engine_is_every_module_of_study_records_and_engine_and_covers_what_a_cell_run_imports():
    # a cell run, as `prunegen run-cell` makes one: the engine, the study loader, the GPU sampler
    code = ("import sys, prunegen.engine.run, prunegen.engine.allocator, prunegen.engine.gpu_sampler, "
            "prunegen.study.load; print(' '.join(m for m in sys.modules if m.startswith('prunegen.')))")
    imported = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout.split())
    counted = {_module(p.relative_to(provenance.PACKAGE).with_suffix("").as_posix())
               for p in provenance.engine_files() if p.suffix == ".py"}
    assert imported <= counted
    every = {_module(p.relative_to(provenance.PACKAGE).with_suffix("").as_posix())
             for sub in ("study", "records", "engine") for p in (provenance.PACKAGE / sub).rglob("*.py")}
    assert counted == every
    assert provenance.PACKAGE / "study" / "study.schema.yaml" in provenance.engine_files()


def test_the_digest_follows_the_engine_source_and_nothing_else(tmp_path):
    copy = tmp_path / "prunegen"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    digest = provenance.source_digest.__wrapped__
    before = digest(copy)
    assert before == provenance.source_digest() and len(before) == 12

    for reporting in ("analysis/figures/claims.py", "cluster/dag.py", "cli.py"):
        (copy / reporting).write_text((copy / reporting).read_text() + "\n# not the engine\n")
    assert digest(copy) == before
    (copy / "engine/training.py").write_text((copy / "engine/training.py").read_text() + "\n# a training change\n")
    changed = digest(copy)
    assert changed != before
    schema = copy / "study" / "study.schema.yaml"
    schema.write_text(schema.read_text() + "\n# a default changed\n")
    assert digest(copy) not in (before, changed)


def test_an_alias_counts_an_older_engines_cells_as_the_engine_it_equals(tmp_path, monkeypatch):
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps({"aaaaaaaaaaaa": {"same_as": "bbbbbbbbbbbb", "shown_by": "a test"},
                                "bbbbbbbbbbbb": {"same_as": "cccccccccccc", "shown_by": "a test"}}))
    monkeypatch.setattr(provenance, "ALIASES_FILE", path)
    old = {"engine": {"source": "aaaaaaaaaaaa", "torch": "2.14.1"}}
    assert provenance.label(old) == "cccccccccccc (torch 2.14.1)"  # followed to the newest
    assert provenance.label({"engine": {"source": "dddddddddddd", "torch": "2.14.1"}}).startswith("dddddddddddd")


def test_the_committed_aliases_are_well_formed():
    raw = json.loads(provenance.ALIASES_FILE.read_text())
    for old, entry in raw.items():
        assert len(old) == 12 and len(entry["same_as"]) == 12 and entry["shown_by"]
        assert provenance.canonical(old) != old
