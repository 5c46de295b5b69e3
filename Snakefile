"""prunegen: the study of pruning's effect on generalization as a Snakemake DAG.

    snakemake --cores 2                                              # the demo study, locally
    snakemake -n --config study=workflow/studies/paper.yaml          # what the paper grid would run
    snakemake --profile profiles/slurm --config study=workflow/studies/paper.yaml
    snakemake --report results/demo/report.html                      # figures + captions
    snakemake --cores 2 --config select="arm=imp noise=0.1"          # a slice: those cells + their parents

Every (benchmark, arm, level, noise, seed) cell is one job; the logic lives in
prunegen.dag, the science in prunegen.
"""

import sys

from prunegen import dag

STUDY_FILE = config.get("study", "workflow/studies/demo.yaml")
STUDY = dag.load(STUDY_FILE, config.get("results_root"), config.get("data_root"))
ROOT = str(STUDY.root)
# The engine runs under the interpreter that runs Snakemake, wherever the job lands.
PRUNEGEN = f"{sys.executable} -m prunegen.cli"
# A slice of the grid (prunegen.selection): the matching cells and the cells they read.
SELECT = config.get("select")
STUDY_ARGS = f"--study {STUDY_FILE}" + "".join(
    f" --{k.replace('_', '-')} {config[k]}" for k in ("results_root", "data_root") if config.get(k))

# Corrupt cells (a record file that does not match its cell.json) lose their marker
# here, once per run in the main process (not in every cluster job): they and the
# cells after them in their chains are then re-run like missing ones.
if workflow.is_main_process:
    dag.set_aside_corrupt(STUDY)

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
