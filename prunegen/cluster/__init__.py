"""RUNNING a study: Snakemake's view of it (`dag`), what it will cost (`plan`,
`calibrate`), where a running study stands (`watch`, from the runs' `joblog`), and SLURM
through submitit (`slurm/`). Never imports the analysis."""
