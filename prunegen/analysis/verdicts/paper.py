"""What the paper states, in one place: the claims, the primary statistic of each and the
side the paper expects it on, the epochs per cycle it trained, and the headline figures
quoted for it (with the context they were quoted in).

Directions follow the paper's account (docs/design.md, "The claims"): pruning trains longer
(lower training loss at low sparsity, which training as long accounts for) and regularizes
(fewer noisy labels fitted, and a lower test error than training as long, at high
sparsity); a smaller dense model alone does not explain it. Claim 5's direction (the best
sparsity rises with label noise) is the project's reading of that account, not a sentence
of the paper, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    key: str          # "1", "2a", ...
    title: str
    statement: str    # the claim, as the page states it
    statistic: str    # the per-seed statistic its primary verdict reads
    expect: int       # -1: the paper expects the statistic below 0; +1: above 0
    arm: str          # the arm it judges
    where: str        # where it is judged
    unit: str = "points"  # "points": a difference of rates (percentage points); "relative": a relative change
    source: str = "the paper's account"  # whose the direction is

    @property
    def expected(self) -> str:
        return "< 0" if self.expect < 0 else "> 0"


CLAIMS = {c.key: c for c in (
    Claim("1", "Pruning reaches a lower test error than dense",
          "`imp` at the level chosen on validation error has a lower test error than `dense`.",
          "test error of `imp` at its validation-chosen level minus `dense`'s, per seed", -1, "imp",
          "every noise level"),
    Claim("2a", "At low sparsity, pruning lowers the training loss",
          "At low sparsity, `imp` reaches a lower training loss than `dense`.",
          "`imp`'s training loss minus `dense`'s, relative to `dense`'s, averaged over the low-sparsity "
          "levels, per seed", -1, "imp", "every noise level", unit="relative"),
    Claim("2b", "Extended training accounts for that gain",
          "At low sparsity, `imp` trains no better than `extended`, the dense model trained as long.",
          "`imp`'s training loss minus `extended`'s at the same level, relative to `dense`'s, averaged over the "
          "low-sparsity levels, per seed", +1, "imp", "every noise level", unit="relative"),
    Claim("3a", "Under label noise, pruning memorizes fewer noisy labels at high sparsity",
          "At high sparsity and noise > 0, `imp` fits fewer noisy training labels than `extended` trained as long.",
          "memorization of `imp` minus `extended`'s at the same level, averaged over the high-sparsity levels, "
          "per seed", -1, "imp", "every noise level above 0"),
    Claim("3b", "Under label noise, pruning generalizes better than training as long",
          "At high sparsity and noise > 0, `imp` has a lower test error than `extended` at the same level, "
          "the same training time: the paper's regularization claim.",
          "test error of `imp` minus `extended`'s at the same level, averaged over the high-sparsity levels, "
          "per seed", -1, "imp", "every noise level above 0"),
    Claim("4a", "Where pruning has a gain, a dense model as small does not match it",
          "Where `imp` beats `dense`, `downscaled` (dense, as many weights as `imp` keeps) has a higher test "
          "error than `imp`.",
          "test error of `downscaled` minus `imp`'s at the median validation-chosen `imp` level, per seed", +1,
          "downscaled", "each noise level where claim 1 held"),
    Claim("4b", "Trained as long, the smaller dense model closes most of that gap",
          "Where `imp` beats `dense`, `downscaled_extended` leaves less than half of the test-error gap that "
          "`downscaled` leaves to `imp`.",
          "(`downscaled_extended` - `imp`) minus half of (`downscaled` - `imp`), in test error, at the level of "
          "claim 4a, per seed", -1, "downscaled_extended", "each noise level where claim 1 held"),
    Claim("5", "The best sparsity rises with label noise",
          "The sparsity chosen on validation error is higher at the highest noise level than at the lowest.",
          "validation-chosen sparsity of `imp` at the highest noise minus at the lowest, per seed", +1, "imp",
          "once, from the lowest to the highest noise level",
          source="the project's reading of the paper's account, not a sentence of the paper"),
)}

# Epochs per training cycle in the paper (OpenLTH's defaults): (dataset, model family).
EPOCHS = {("mnist", "mlp"): 40, ("cifar10", "resnet"): 160, ("cifar10", "vgg"): 160,
          ("cifar100", "resnet"): 160, ("cifar100", "vgg"): 160, ("imagenet", "imagenet_resnet50"): 90}


def _family(model: str) -> str:
    return "resnet" if model.startswith("resnet") else "vgg" if model.startswith("vgg") else model


def paper_epochs(dataset: str, model: str) -> int | None:
    return EPOCHS.get((dataset, _family(model)))


def family_epochs(model: str) -> int | None:
    """The paper's epochs per cycle for this model family on any of its datasets (a
    benchmark of the paper's model on another dataset: Fashion-MNIST with LeNet)."""
    return next((e for (_, family), e in EPOCHS.items() if family == _family(model)), None)


def regime(dataset: str, model: str, epochs: int) -> tuple[int | None, bool]:
    """(the paper's epochs per cycle for this benchmark or its model family, whether
    `epochs` is it): a claim is judged in the paper's regime or says it is not."""
    theirs = paper_epochs(dataset, model) or family_epochs(model)
    return theirs, theirs == epochs


@dataclass(frozen=True)
class Quoted:
    arm: str
    figure: float     # relative change of the average training loss against dense
    context: str      # as quoted
    sparsity: float | None = None  # the sparsity it was quoted at, where the quote gives one
    noise: float | None = None     # the effective label noise it was quoted at, where given


# Quoted for the paper by third parties; their exact context (benchmark, noise, subgroup)
# is unverified, so the page shows them as context, never as a test.
SPARSITY = 0.8            # "at 80% sparsity"
NOISE_EFFECTIVE = 0.0281  # "at 2.81% noise" (1/32 x 9/10: any-class noise at a nominal 1/32)
QUOTED = (
    Quoted("imp", -0.2621, "pruning, at 80% sparsity", sparsity=0.8),
    Quoted("extended", -0.1303, "extended dense training, at 2.81% label noise", noise=0.0281),
    Quoted("downscaled", +0.1334, "a downscaled dense model, at 0.92% sparsity", sparsity=0.0092),
)
SPARSITY_TOLERANCE = 0.05         # a level within 5 points of 80% sparsity counts as "at 80%"
NOISE_FACTOR = 2.0                # a noise level within a factor 2 of 2.81% effective noise counts
