import pytest
import torch

from prunegen.engine.noise import noisy_labels


def labels(n=1000, classes=10):
    return torch.arange(n) % classes


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.2, 0.5])
def test_other_class_noise_changes_exactly_round_noise_n_labels(noise):
    y = labels(1257)
    out = noisy_labels(y, noise, 10, seed=3, dataset="digits")
    assert int((out != y).sum()) == round(noise * len(y))
    assert out.min() >= 0 and out.max() < 10


def test_noisy_set_depends_on_dataset_noise_and_seed_only():
    y = labels()
    a = noisy_labels(y, 0.2, 10, seed=0, dataset="digits")
    assert torch.equal(a, noisy_labels(y, 0.2, 10, seed=0, dataset="digits"))
    assert not torch.equal(a, noisy_labels(y, 0.2, 10, seed=1, dataset="digits"))
    assert not torch.equal(a, noisy_labels(y, 0.2, 10, seed=0, dataset="mnist"))


def test_new_labels_are_spread_over_the_other_classes():
    y = torch.zeros(20000, dtype=torch.long)
    out = noisy_labels(y, 0.5, 10, seed=0, dataset="digits")
    counts = torch.bincount(out[out != 0], minlength=10)[1:]
    assert counts.min() > 0.8 * counts.float().mean()


def test_any_class_noise_keeps_some_true_labels():
    y = labels(10000)
    out = noisy_labels(y, 0.5, 10, seed=0, dataset="digits", mode="any_class")
    changed = int((out != y).sum())
    assert 0.4 * 5000 < changed < 5000  # about 9/10 of the chosen examples move
    assert abs(changed / 5000 - 0.9) < 0.03


@pytest.mark.parametrize("noise", [1.0, -0.1])
def test_noise_outside_unit_interval_is_refused(noise):
    with pytest.raises(ValueError, match=str(noise)):
        noisy_labels(labels(), noise, 10, seed=0, dataset="digits")
