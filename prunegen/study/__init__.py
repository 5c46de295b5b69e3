"""WHAT to compute: a study file (`load`: YAML, validated against the one schema,
defaults filled in) becomes a grid of cells (`grid`: key, hash, folder), each reading the
resolved hyperparameters its arm reads (`hparams`, `arm_specs`) and the cells it continues
(`chains`). `shapes` counts the models' widths without torch; `selection` is a slice of a
study. Torch-free: nothing here imports torch, pandas or the rest of prunegen."""
