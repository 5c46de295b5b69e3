"""What the paper states, in one place: the claims and the direction each expects, the
epochs per cycle it trained, and the headline figures quoted for it.

Directions follow the paper's account (docs/design.md, "The claims"): pruning trains longer
(lower training loss at low sparsity) and regularizes (fewer noisy labels fitted at high
sparsity), so the best sparsity should rise with label noise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    key: str          # "1", "2", ..., "4a"
    title: str
    statement: str    # the claim, as the page states it
    statistic: str    # the per-seed difference a verdict reads
    expect: int       # -1: the paper expects the statistic below 0; +1: above 0

    @property
    def expected(self) -> str:
        return "< 0" if self.expect < 0 else "> 0"


CLAIMS = {c.key: c for c in (
    Claim("1", "Pruning reaches a lower test error than dense",
          "`imp` at the level chosen on validation error has a lower test error than `dense`.",
          "test error of `imp` at its validation-chosen level minus `dense`'s, per seed", -1),
    Claim("2", "Pruning and extended training both lower the training loss at low sparsity",
          "At low sparsity, `imp` and `extended` both reach a lower training loss than `dense`.",
          "relative change of the training loss against `dense`, per seed", -1),
    Claim("3", "Under label noise, pruning memorizes fewer noisy labels than extended training",
          "At high sparsity and noise > 0, `imp` fits fewer noisy training labels than `extended`.",
          "memorization of `imp` minus `extended`'s, per seed", -1),
    Claim("4a", "A smaller dense model alone does not match pruning",
          "`downscaled` (dense, as many weights as `imp` keeps) has a higher test error than `imp`.",
          "test error of `downscaled` minus `imp`'s, per seed", +1),
    Claim("4b", "With extended training, the smaller dense model comes closer to pruning",
          "`downscaled_extended` is closer to `imp`'s test error than `downscaled` is.",
          "distance of `downscaled_extended` to `imp` minus distance of `downscaled` to `imp`, in test error, "
          "per seed", -1),
    Claim("5", "The best sparsity rises with label noise",
          "The sparsity chosen on validation error is higher at the highest noise level than at the lowest.",
          "validation-chosen sparsity of `imp` at the highest noise minus at the lowest, per seed", +1),
)}

# Epochs per training cycle in the paper (OpenLTH's defaults): (dataset, model family).
EPOCHS = {("mnist", "mlp"): 40, ("cifar10", "resnet"): 160, ("cifar10", "vgg"): 160,
          ("cifar100", "resnet"): 160, ("cifar100", "vgg"): 160}


def _family(model: str) -> str:
    return "resnet" if model.startswith("resnet") else "vgg" if model.startswith("vgg") else model


def paper_epochs(dataset: str, model: str) -> int | None:
    return EPOCHS.get((dataset, _family(model)))


def family_epochs(model: str) -> int | None:
    """The paper's epochs per cycle for this model family on any of its datasets (a
    benchmark of the paper's model on another dataset: Fashion-MNIST with LeNet)."""
    return next((e for (_, family), e in EPOCHS.items() if family == _family(model)), None)


@dataclass(frozen=True)
class Quoted:
    arm: str
    figure: float     # relative change of the average training loss against dense
    context: str


# Quoted for the paper by third parties; their exact context (benchmark, noise, subgroup)
# is unverified, so the page shows them as context, never as a test.
SPARSITY = 0.8            # "at 80% sparsity"
NOISE_EFFECTIVE = 0.0281  # "at 2.81% noise" (1/32 x 9/10: any-class noise at a nominal 1/32)
QUOTED = (
    Quoted("imp", -0.2621, "pruning, at 80% sparsity"),
    Quoted("extended", -0.1303, "extended dense training, at 2.81% label noise"),
    Quoted("downscaled", +0.1334, "a downscaled dense model"),
)
SPARSITY_TOLERANCE = 0.05         # a level within 5 points of 80% sparsity counts as "at 80%"
NOISE_FACTOR = 2.0                # a noise level within a factor 2 of 2.81% effective noise counts
