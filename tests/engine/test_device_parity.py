"""The same experiment on any device (issue 27): an epoch's data plan is drawn on the CPU in
the order the loop always drew it, masks take their parameter's memory format, evaluation
runs in fp32, and a cell records the device and precision it trained in."""

import pytest
import torch
import torch.nn.functional as F

from prunegen.engine import models, pruning, training
from prunegen.engine.data import crop_batch
from prunegen.engine.run import set_determinism
from prunegen.engine.seeds import generator
from prunegen.engine.training import EpochPlan


def _old_draws(g: torch.Generator, x: torch.Tensor, batch_size: int, pad: int, flip: bool):
    """What the loop drew before plans existed, written out as it was: the order on the
    generator, then per batch the crop rows, the crop columns and the flips, and each batch
    cropped from those draws (the per-batch gather of data.augment_batch)."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=g)
    batches = []
    for i in range(0, n, batch_size):
        xb = x.index_select(0, perm[i:i + batch_size])
        b, _, h, w = xb.shape
        oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=g)
        ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=g)
        rows, cols = oy + torch.arange(h), ox + torch.arange(w)
        if flip:
            flipped = torch.rand((b, 1), generator=g) < 0.5
            cols = torch.where(flipped, cols.flip(1), cols)
        padded = F.pad(xb, (pad,) * 4).permute(0, 2, 3, 1)
        out = padded[torch.arange(b).view(b, 1, 1), rows.view(b, h, 1), cols.view(b, 1, w)]
        batches.append(out.permute(0, 3, 1, 2))
    return perm, batches


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("n,batch_size", [(100, 32), (64, 16)])  # a short last batch, and none
def test_an_epochs_plan_is_the_draw_order_of_before(flip, n, batch_size):
    x = torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    perm_then, batches_then = _old_draws(generator(3, "batches", 1, 2), x, batch_size, 4, flip)

    plan = EpochPlan.draw(generator(3, "batches", 1, 2), n, batch_size, augment=True, flip=flip)
    assert torch.equal(plan.perm, perm_then)
    assert (plan.flipped is None) == (not flip)
    for k, i in enumerate(range(0, n, batch_size)):
        rows = slice(i, i + batch_size)
        xb = x.index_select(0, plan.perm[rows])
        got = crop_batch(xb, plan.oy[rows], plan.ox[rows], None if plan.flipped is None else plan.flipped[rows])
        assert torch.equal(got, batches_then[k]), f"batch {k}"


def test_without_augmentation_the_plan_is_the_order_alone():
    g = generator(0, "batches", 0, 0)
    plan = EpochPlan.draw(g, 50, 16, augment=False, flip=False)
    assert torch.equal(plan.perm, torch.randperm(50, generator=generator(0, "batches", 0, 0)))
    assert plan.oy is None and plan.ox is None and plan.flipped is None
    # nothing else was drawn: the generator is where a bare permutation leaves it
    after = generator(0, "batches", 0, 0)
    torch.randperm(50, generator=after)
    assert torch.equal(g.get_state(), after.get_state())


def _plans(monkeypatch, tmp_path, device: str) -> list[EpochPlan]:
    """The plans a short synthetic ResNet-20 run (crops and flips) draws, on `device`."""
    from tests.engine.test_cell import _synthetic_run

    seen = []
    real = EpochPlan.draw

    def spy(g, *args, **kwargs):
        seen.append(real(g, *args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(EpochPlan, "draw", staticmethod(spy))
    _synthetic_run(tmp_path, f"plan-{device}", epochs=2, device=device)
    return seen


def test_the_loop_takes_its_data_from_the_epochs_plan(monkeypatch, tmp_path):
    """Every epoch draws one plan (on the CPU: draw refuses any other generator)."""
    plans = _plans(monkeypatch, tmp_path, "cpu")
    assert len(plans) == 2 and all(p.perm.device.type == "cpu" and p.oy is not None for p in plans)
    assert not torch.equal(plans[0].perm, plans[1].perm)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_cell_sees_the_data_a_cpu_cell_sees(monkeypatch, tmp_path):
    cpu, cuda = _plans(monkeypatch, tmp_path, "cpu"), _plans(monkeypatch, tmp_path, "cuda")
    for a, b in zip(cpu, cuda, strict=True):
        assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("perm", "oy", "ox", "flipped"))


def test_masks_take_their_parameters_memory_format():
    model = models.build_model({"name": "resnet20"}, input_shape=(3, 32, 32), num_classes=10, width=16)
    model = model.to(memory_format=torch.channels_last)
    mask = pruning.magnitude_prune(model, pruning.full_mask(model, []), pruning.kept(pruning.full_mask(model, [])) // 2)
    bound = pruning.bind(model, mask)
    convs = [(p, m) for p, m in bound if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p, _ in convs)
    for p, m in bound:
        assert m.stride() == p.stride() and m.dtype == p.dtype
    params = dict(model.named_parameters())
    for name, m in mask.items():  # the values are the mask's, bit for bit
        match = [b for p, b in bound if p is params[name]]
        assert not match or torch.equal(match[0], m.to(params[name].dtype))


def test_evaluation_never_enters_autocast(monkeypatch):
    """The per-example records and memorization come from fp32 logits on every device."""
    from prunegen.engine.data import Dataset
    from prunegen.engine.splits import make_splits

    def refuse(device):
        raise AssertionError("evaluation entered autocast")

    monkeypatch.setattr(training, "autocast", refuse)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 28, 28), generator=g, dtype=torch.uint8)
    ds = Dataset("mnist", x, torch.arange(40) % 10, x[:8], torch.arange(8), 10, (33.3,), (78.6,), False)
    splits = make_splits(ds, val_size=0, noise=0.0, noise_mode="other_class", seed=0, augment=False, device="cpu")
    model = models.build_model({"name": "mlp", "hidden": [20]}, input_shape=(1, 28, 28), num_classes=10)
    loss, pred = training.evaluate(model, splits.test, splits, batch_size=3)
    assert loss.dtype == torch.float32 and loss.shape == (8,) and pred.shape == (8,)


def test_a_cpu_cell_trains_in_fp32_and_leaves_cudas_switches_alone():
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    assert set_determinism(torch.device("cpu"), deterministic=False) == "fp32"
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("on", [True, False])
def test_a_cuda_cell_sets_deterministic_algorithms_as_the_study_says(on):
    before = torch.are_deterministic_algorithms_enabled()
    try:
        assert set_determinism(torch.device("cuda"), deterministic=on) == "bf16-autocast"
        assert torch.are_deterministic_algorithms_enabled() == on and torch.backends.cudnn.deterministic == on
    finally:
        torch.use_deterministic_algorithms(before)
