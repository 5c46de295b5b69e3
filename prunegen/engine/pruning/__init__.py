"""Masks and the pruning methods that make them.

`masks`: the mask type, keeping masked weights at zero, sparsity counts, global
magnitude and random pruning (the built-in arms'); one module per method family
(`magnitude`, `random_global`, `saliency`: SNIP and GraSP, `synflow`), named in
`registry`.
"""

from .context import Context
from .masks import (Bound, Mask, apply_mask, bind, count_prunable, full_mask, keep_top, kept, magnitude_prune,  # noqa: I001
                    mask_grads, prunable_names, random_prune, sparsity_report, total)
from .registry import METHODS, prune

__all__ = ["Bound", "Context", "METHODS", "Mask", "apply_mask", "bind", "count_prunable", "full_mask",
           "keep_top", "kept", "magnitude_prune", "mask_grads", "prunable_names", "prune",
           "random_prune", "sparsity_report", "total"]
