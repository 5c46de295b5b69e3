"""HOW one cell is computed: `run` is the recipe (its start by base: `arms`, `controls`,
`start`, `parents`, `tie`; then `training` with `sgd` and `kernels`, on `models` and the
`data` in its `splits` with label `noise`, every stream from `seeds`), writing the cell's
records through prunegen.records. `pruning/` holds the masks and the pruning methods.
Imports torch; never Snakemake, SLURM or the analysis."""
