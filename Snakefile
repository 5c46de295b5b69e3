"""prunegen: the study of pruning's effect on generalization as a Snakemake DAG.

    snakemake --cores 2                                              # the demo study, locally
    snakemake -n --config study=workflow/studies/paper.yaml          # what the paper grid would run
    snakemake --profile profiles/slurm --config study=workflow/studies/paper.yaml
    snakemake --report results/demo/report.html                      # figures + captions
    snakemake --cores 2 --config select="arm=imp noise=0.1"          # a slice: those cells + their parents
    snakemake --cores 2 --config warm=false                          # each cell in a process of its own

Every (benchmark, arm, level, noise, seed) cell is one job; the logic lives in
prunegen.cluster.dag, the science in prunegen (docs/design.md).
"""

import sys

from prunegen.cluster import dag, pool
from prunegen.records import layout

STUDY_FILE = config.get("study", dag.DEFAULT_STUDY)
STUDY = dag.load(STUDY_FILE, config.get("results_root"), config.get("data_root"), config.get("set"))
ROOT = str(STUDY.root)
# The engine runs under the interpreter that runs Snakemake, wherever the job lands.
PRUNEGEN = f"{sys.executable} -m prunegen.cli"
# A slice of the grid (prunegen.study.selection): the matching cells and the cells they read.
SELECT = config.get("select")
# Overrides of the study file: --config set="benchmarks.mnist-lenet300.train.epochs=40 seeds=[0,1]"
STUDY_ARGS = dag.job_args(STUDY_FILE, config)

# Corrupt cells (a record file that does not match its cell.json), found once in the
# main process (not in every cluster job): each is re-run with the cells after it in its
# chain. A real run (any invocation but -n: --unlock and --report too) renames its
# cell.json to cell.json.corrupt here, so Snakemake finds the cell's output missing, and
# the cell reads as corrupt until it is re-run. A dry run changes nothing on disk: there each corrupt cell
# waits for a set_aside job instead (standing for the rename), so the job list shows the
# cells a real run would re-run, and why. (Only the dry run: a real run that recorded the
# extra input would re-run the cell once more when it is gone.)
CORRUPT = dag.corrupt_cells(STUDY, SELECT) if workflow.is_main_process else {}
if getattr(workflow.output_settings, "dryrun", False):
    SET_ASIDE = CORRUPT
else:
    SET_ASIDE = {}
    if workflow.is_main_process:  # the study as this run reads it, beside its results
        dag.write_resolved(STUDY)
    dag.set_aside_all(CORRUPT)

# Locally, cells run in warm processes (torch imported and data loaded once per process,
# not per cell: prunegen.cluster.pool); --config warm=false runs each in its own process.
onstart:
    pool.start_local(workflow, config)

onsuccess:
    pool.close_local()

onerror:
    pool.close_local()

wildcard_constraints:
    **dag.WILDCARD_CONSTRAINTS,

report: "workflow/report/workflow.rst"

include: "workflow/rules/cells.smk"
include: "workflow/rules/analysis.smk"


rule all:
    default_target: True
    input:
        rules.figures.output,
        rules.merge.output,
        # Every cell is a target: Snakemake does not rebuild a missing intermediate file
        # whose consumers look up to date, so a deleted cell would otherwise stay missing.
        dag.grid_markers(STUDY, SELECT),
        # A corrupt cell's set-aside marker: as a target, its (missing) marker is made, and
        # the cell and those after it re-run; as a mere input, Snakemake would not make it.
        dag.set_aside_markers(SET_ASIDE),
