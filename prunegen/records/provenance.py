"""Which engine and which machine computed a cell, as its cell.json records them.

The engine is torch's version and a digest of prunegen's own source: every module of
`study/`, `records/` and `engine/` (what a cell run imports, and nothing of the workflow,
the cluster side or the analysis) and the study schema. `prunegen status` and the results
page say when a study's cells come from more than one engine.

Why not in the cell hash: the hash names what a cell *is* (its resolved hyperparameters),
and a refactor of the training loop must not throw away thousands of GPU-hours of cells
that are still right. But an engine change can change a cell's floating-point bits (the
oneDNN products of fa27abc moved MNIST test errors by a median 0.07 points), so a study
that mixes engines is told so, with the cells of each, and the researcher decides whether
to re-run the older ones.

A change known to compute the same bits (a move of code, shown by re-running cells to
bit-identical records) is written into `engine_aliases.json` beside this module: the
older digest, the one it equals, and how that was shown. Cells of the older digest then
count as the newer engine. The file is data, not source, so it is outside the digest.

The machine: host, CPU model, usable CPUs, torch threads, GPU and SLURM job, enough to say
on a results page which machines (and how many CPUs each) produced a study's numbers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # prunegen/
ENGINE_PACKAGES = ("study", "records", "engine")
ALIASES_FILE = Path(__file__).resolve().with_name("engine_aliases.json")


def engine_files(package: Path = PACKAGE) -> list[Path]:
    """The engine's source files, sorted: every module of the packages a cell run
    imports, and the study schema (its defaults resolve the hyperparameters)."""
    files = [p for sub in ENGINE_PACKAGES for p in (package / sub).rglob("*.py")]
    return sorted([*files, package / "study" / "study.schema.yaml"])


@functools.lru_cache(maxsize=1)
def source_digest(package: Path = PACKAGE) -> str:
    """sha256 over the engine files' paths and bytes: 12 hex digits, as git shows a commit."""
    h = hashlib.sha256()
    for path in engine_files(package):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def aliases() -> dict[str, str]:
    """Older engine digest -> the digest it is known to compute the same as."""
    return _read_aliases(ALIASES_FILE)


@functools.lru_cache(maxsize=4)
def _read_aliases(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {old: entry["same_as"] for old, entry in json.loads(path.read_text()).items()}


def canonical(source: str) -> str:
    """The engine a digest counts as: followed through the aliases to the newest."""
    seen = {source}
    while source in aliases():
        source = aliases()[source]
        if source in seen:  # a loop in the file: stop rather than spin
            break
        seen.add(source)
    return source


def installed_torch_version() -> str:
    """torch's `__version__` (local part included: "2.14.1+cu130"), read from its
    `torch/version.py` without importing torch, which takes seconds: `prunegen status`
    names this checkout's engine with it."""
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin:
        found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""",
                          Path(spec.origin).with_name("version.py").read_text(), re.M)
        if found:
            return found.group(1)
    return importlib.metadata.version("torch")  # without version.py: the distribution's (no local part)


def describe_engine(torch_version: str, device: str = "cpu", precision: str = "fp32",
                    deterministic: bool = True) -> dict:
    """The engine record of a cell: the source digest and torch's version, the device type
    it trained on, its precision (fp32 on CPU; bf16 autocast for training on CUDA, with
    evaluation in fp32) and whether CUDA's deterministic algorithms were on."""
    return {"source": source_digest(), "torch": torch_version, "device": device, "precision": precision,
            "deterministic": bool(deterministic)}


def current(torch_version: str, device: str = "cpu", precision: str = "fp32") -> str:
    """This checkout's engine, labelled as a cell of it would be (on `device`)."""
    return label({"engine": describe_engine(torch_version, device, precision)})


def label(meta: dict) -> str:
    """One line per engine for `prunegen status` and the page, from a cell.json: the
    source digest, torch, and the device, precision and determinism where recorded (so
    cells that mix devices or precisions read as several engines). A cell written before
    engines were recorded is named by its git revision and torch version, which is all it has."""
    e = meta.get("engine")
    if e:
        extra = [x for x in (e.get("device"), e.get("precision")) if x]
        if e.get("deterministic") is False:
            extra.append("nondeterministic")
        if meta.get("factory"):  # a model from the researcher's code: its version is part of the engine
            extra.append(f"factory {meta['factory']['path']} {meta['factory']['source_digest']}")
        return f"{canonical(e['source'])} (torch {e['torch']}{''.join(', ' + x for x in extra)})"
    rev = (meta.get("git_revision") or "")[:7] or "unknown revision"
    return f"not recorded (git {rev}, torch {meta.get('versions', {}).get('torch', '?')})"


def tally(labels: Iterable[str]) -> list[tuple[str, int]]:
    """(label, cells) per engine, most cells first (then by label): how `prunegen status`
    and the results page list them."""
    return sorted(Counter(labels).items(), key=lambda en: (-en[1], en[0]))


# ---------------------------------------------------------------- the machine

def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux), else what the platform says, else the architecture."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (a SLURM job's allocation, not the node's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def describe_machine(torch_threads: int, gpu: str | None) -> dict:
    return {"host": platform.node(), "cpu": cpu_model(), "cpus": usable_cpus(), "torch_threads": torch_threads,
            "gpu": gpu, "os": f"{platform.system()} {platform.release()}",
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def machine_label(m: dict) -> str:
    """One line for a results page: '2 x AMD EPYC CPUs, 1 torch thread' (+ the GPU)."""
    s = f"{m['cpus']} x {m['cpu']} CPU{'s' if m['cpus'] != 1 else ''}, {m['torch_threads']} torch " \
        f"thread{'s' if m['torch_threads'] != 1 else ''} per cell"
    return s + (f", GPU {m['gpu']}" if m.get("gpu") else "")
