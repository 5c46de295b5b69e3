"""prunegen: pruning's effect on generalization, as a reproducible cluster study.

A study flows through five packages, each importing only those above it:

    study/     WHAT to compute: YAML -> validated Study -> cells -> which cells a cell reads   (no torch)
    records/   the on-disk contract: layout, Parquet schemas, atomic store, lock, provenance  (no torch)
    engine/    HOW one cell is computed: start, training, models, data, pruning -> its records (torch)
    analysis/  records -> tables -> verdicts, figures, pages                                    (no torch)
    cluster/   RUNNING it: the Snakemake glue, plan, watch, SLURM through submitit             (no analysis)

`cli.py` is the `prunegen` command, one subcommand per stage. docs/design.md says why.
"""

__version__ = "0.1.0"


def open(study, results_root=None, set=None):  # noqa: A001, A002 - prunegen.open(study), as tarfile.open
    """A study's results from Python: `prunegen.open("workflow/studies/demo.yaml")` returns
    prunegen.analysis.api.Results (status, merged tables, verdicts, per-example records,
    figures), reading only verified records; `results_root` and `set` as the command line's
    --results-root and --set."""
    from .analysis.api import Results  # the analysis only, on first use: importing prunegen stays free

    return Results.open(study, results_root, set)
