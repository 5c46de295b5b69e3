"""Snakemake executor: every job goes to SLURM through submitit (see prunegen.slurm)."""
