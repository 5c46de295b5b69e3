"""SLURM through submitit, core apart from the Snakemake protocol: `request` (what a job
asks for), `job` (a requeueable shell command), `submit` (arrays, backoff, scancel) and
`status` (one shared watcher). No Snakemake import."""
