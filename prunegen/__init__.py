"""prunegen: pruning's effect on generalization, as a reproducible study.

The engine (this package) knows nothing of Snakemake or SLURM: a study file
expands into cells, a cell is trained by `prunegen.cell.run_cell`, and its
records are merged by `prunegen.analysis`.
"""

__version__ = "0.1.0"
