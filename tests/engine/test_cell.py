"""A digits cell of every arm, end to end on CPU: records, sparsity, cycles, noise,
determinism and resume after SIGKILL."""

import json
import math
import os
import platform
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from prunegen.engine import kernels, models, pruning, training
from prunegen.records import provenance, schemas, store
from prunegen.study.arm_specs import ARMS
from prunegen.study.load import load_study
from tests.helpers import SMOKE, run_chain

LEVEL = 2


@pytest.fixture(scope="module")
def chains(tmp_path_factory, cell_cache):
    """Every arm at level 2 (noise 0.2), with all the cells they need."""
    study = load_study(SMOKE, {"results_root": str(tmp_path_factory.mktemp("results"))})
    dirs = {arm: run_chain(study, arm, 0 if arm == "dense" else LEVEL, 0.2, cache=cell_cache) for arm in ARMS}
    return study, dirs


def summary(d):
    return pq.read_table(d / "summary.parquet").to_pylist()[0]


@pytest.mark.parametrize("arm", ARMS)
def test_every_arm_writes_every_record_with_the_documented_columns(chains, arm):
    study, dirs = chains
    d = dirs[arm]
    cell = study.cell("digits-mlp", arm, 0 if arm == "dense" else LEVEL, 0.2, 0)
    assert store.is_complete(d, cell.hash)
    assert pq.read_schema(d / "history.parquet").names == schemas.HISTORY.names
    assert pq.read_schema(d / "examples.parquet").names == schemas.EXAMPLES.names
    assert pq.read_schema(d / "summary.parquet").names == schemas.SUMMARY.names
    meta = json.loads((d / "cell.json").read_text())
    assert meta["cell_hash"] == cell.hash and meta["hparams"]["train"]["lr"] == 0.05
    assert meta["versions"]["torch"] == torch.__version__
    m = meta["machine"]  # what it ran on, for the results page's compute section
    assert m["host"] == platform.node() and m["cpus"] == len(os.sched_getaffinity(0))
    assert m["torch_threads"] == torch.get_num_threads() and m["gpu"] is None and m["cpu"]
    state = torch.load(d / "model.pt", weights_only=True)
    mask = torch.load(d / "mask.pt", weights_only=True)
    for name, m in mask.items():  # the saved weights hold the zeros of the saved mask
        assert torch.equal(state[name] != 0, m)
    ex = pq.read_table(d / "examples.parquet").to_pandas()
    assert set(ex.split) == {"train", "val", "test"}
    assert (ex.split == "val").sum() == 180 and (ex.split == "test").sum() == 360
    s = summary(d)
    assert 0 <= s["test_error"] < 0.5  # it learned something
    assert s["test_error"] == pytest.approx(1 - ex[ex.split == "test"].correct_observed.mean())


@pytest.mark.parametrize("arm", ["imp", "random"])
def test_pruned_density_is_0_8_to_the_level_counted_from_zeros(chains, arm):
    study, dirs = chains
    for level in range(1, LEVEL + 1):
        d = study.cell("digits-mlp", arm, level, 0.2, 0).dir
        s = summary(d)
        assert abs(s["prunable_nonzero"] - 0.8 ** level * s["prunable_weights"]) <= 1
        state = torch.load(d / "model.pt", weights_only=True)
        mask = torch.load(d / "mask.pt", weights_only=True)
        zeros = sum(int((state[n] == 0).sum()) for n in mask)
        assert s["prunable_weights"] - zeros == s["prunable_nonzero"] == sum(int(m.sum()) for m in mask.values())
        removed = s["prunable_weights"] - s["prunable_nonzero"]
        assert s["sparsity_all"] == pytest.approx(removed / s["parameters"])
        assert s["sparsity_all"] < s["sparsity"]  # biases and the output layer are never pruned


def test_random_has_imps_per_layer_densities_but_another_mask(chains):
    study, _ = chains
    imp = torch.load(study.cell("digits-mlp", "imp", LEVEL, 0.2, 0).dir / "mask.pt", weights_only=True)
    rnd = torch.load(study.cell("digits-mlp", "random", LEVEL, 0.2, 0).dir / "mask.pt", weights_only=True)
    assert {n: int(m.sum()) for n, m in imp.items()} == {n: int(m.sum()) for n, m in rnd.items()}
    assert any(not torch.equal(imp[n], rnd[n]) for n in imp)


@pytest.mark.parametrize("arm", ["imp", "extended", "random", "downscaled_extended"])
def test_multi_cycle_arms_train_k_plus_1_cycles_with_the_lr_restarted(chains, arm):
    study, dirs = chains
    h = pq.read_table(dirs[arm] / "history.parquet").to_pandas()
    epochs = study.benchmarks["digits-mlp"].train.epochs
    assert list(h.cycle.unique()) == list(range(LEVEL + 1))
    assert len(h) == (LEVEL + 1) * epochs
    for _, cycle in h.groupby("cycle"):
        assert cycle.lr.iloc[0] == 0.05 and cycle.lr.iloc[-1] == pytest.approx(0.005)  # restarted, then decayed
    assert summary(dirs[arm])["total_epochs"] == (LEVEL + 1) * epochs


def test_downscaled_width_matches_the_imp_density(chains):
    study, dirs = chains
    for arm in ("downscaled", "downscaled_extended"):
        s = summary(dirs[arm])
        assert s["width"] < 64 and s["density"] == 1.0
        assert abs(s["width_ratio"] - 0.8 ** LEVEL) < 0.03
        h = pq.read_table(dirs[arm] / "history.parquet").to_pandas()
        assert h.cycle.nunique() == (1 if arm == "downscaled" else LEVEL + 1)


def test_noise_is_recorded_per_example_and_shared_by_every_arm(chains):
    _, dirs = chains
    noisy = None
    for arm, d in dirs.items():
        ex = pq.read_table(d / "examples.parquet").to_pandas()
        train = ex[ex.split == "train"]
        assert int(train.is_noisy.sum()) == round(0.2 * len(train))
        assert (train.observed_label[train.is_noisy] != train.true_label[train.is_noisy]).all()
        assert not ex[ex.split != "train"].is_noisy.any()  # validation and test are never noised
        ids = set(train.index[train.is_noisy])
        assert noisy is None or ids == noisy
        noisy = ids
        s = summary(d)
        assert s["memorization"] == pytest.approx(train.correct_observed[train.is_noisy].mean())


def _parquet(d):
    out = {}
    for kind in ("history", "examples", "summary"):
        t = pq.read_table(d / f"{kind}.parquet")
        out[kind] = t.drop([c for c in t.column_names if c in schemas.WALL_CLOCK])
    return out


def _same(a, b):
    pa_, pb = _parquet(a), _parquet(b)
    for kind in pa_:  # NaN-aware and exact (check_exact): the same bits, not close values
        pd.testing.assert_frame_equal(pa_[kind].to_pandas(), pb[kind].to_pandas(), check_exact=True, obj=kind)
    sa = torch.load(a / "model.pt", weights_only=True)
    sb = torch.load(b / "model.pt", weights_only=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_cell_run_twice_gives_identical_records(chains, tmp_path):
    study, dirs = chains
    again = load_study(SMOKE, {"results_root": str(tmp_path)})
    d = run_chain(again, "imp", 1, 0.2)  # trained again, not from the cache
    _same(study.cell("digits-mlp", "imp", 1, 0.2, 0).dir, d)


def test_a_complete_cell_is_skipped_and_a_changed_one_rerun(chains, tmp_path, caplog):
    study, dirs = chains
    stamp = (dirs["dense"] / "cell.json").stat().st_mtime_ns
    from prunegen.engine.run import run
    run(study.cell("digits-mlp", "dense", 0, 0.2, 0))
    assert (dirs["dense"] / "cell.json").stat().st_mtime_ns == stamp


def _long_study(tmp_path, root):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["benchmarks"]["digits-mlp"]["model"]["hidden"] = [256, 128]
    raw["benchmarks"]["digits-mlp"]["train"]["epochs"] = 60
    raw["results_root"] = str(root)
    raw["checkpoint_every_s"] = 0  # every epoch: a SIGKILL lands between two checkpoints
    path = tmp_path / f"long-{root.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run_cell_cmd(path):
    return [sys.executable, "-m", "prunegen.cli", "run-cell", "--study", str(path), "--benchmark", "digits-mlp",
            "--arm", "dense", "--level", "0", "--noise", "0.2", "--seed", "0"]


@pytest.mark.slow
def test_sigkill_mid_training_resumes_from_the_checkpoint_to_the_same_result(tmp_path):
    killed_path, clean_path = _long_study(tmp_path, tmp_path / "killed"), _long_study(tmp_path, tmp_path / "clean")
    cell_dir = load_study(killed_path).cell("digits-mlp", "dense", 0, 0.2, 0).dir
    proc = subprocess.Popen(_run_cell_cmd(killed_path), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (cell_dir / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.01)
    time.sleep(0.3)  # land somewhere inside a later epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cell_dir / "cell.json").exists(), "the run finished before it could be killed"
    assert not store.is_complete(cell_dir, load_study(killed_path).cell("digits-mlp", "dense", 0, 0.2, 0).hash)
    done_epochs = torch.load(cell_dir / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= done_epochs < 60

    subprocess.run(_run_cell_cmd(killed_path), check=True, capture_output=True)
    meta = json.loads((cell_dir / "cell.json").read_text())
    assert meta["resumed_from"]["epoch"] >= done_epochs  # it did not start over
    assert not (cell_dir / "checkpoint.pt").exists()

    subprocess.run(_run_cell_cmd(clean_path), check=True, capture_output=True)
    clean_dir = load_study(clean_path).cell("digits-mlp", "dense", 0, 0.2, 0).dir
    assert json.loads((clean_dir / "cell.json").read_text())["resumed_from"] is None
    _same(cell_dir, clean_dir)


def _synthetic_run(tmp_path, name: str, epochs: int, width: int = 4, on_epoch=None, device: str = "cpu",
                   model: str = "resnet20", cycles=(0,), every_s: float = 0.0):
    """A ResNet-20 trained on 64 synthetic CIFAR-shaped images with crops and flips: the
    convolutional path on CPU (width 4 runs NCHW, width 16 channels_last); or, with
    `model="mlp"`, a 3072-300-100-10 MLP whose first layer's products run in oneDNN.
    Two runs of one `name` share its checkpoint."""
    from prunegen.engine.checkpoints import Checkpoint
    from prunegen.engine.data import Dataset
    from prunegen.engine.splits import make_splits
    from prunegen.engine.training import train, use_channels_last
    from prunegen.study.hparams import Schedule, Train

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (80, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (80,), generator=g)
    ds = Dataset("cifar10", x[:64], y[:64], x[64:], y[64:], 10, (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), True)
    splits = make_splits(ds, val_size=8, noise=0.0, noise_mode="other_class", seed=0, augment=True, device=device)
    torch.manual_seed(0)
    spec = {"name": model}
    model = models.build_model(spec, input_shape=(3, 32, 32), num_classes=10,
                               width=width if spec["name"] != "mlp" else None).to(device)
    if use_channels_last(model, torch.device(device)):  # as cell.run does
        model = model.to(memory_format=torch.channels_last)
    mask = pruning.full_mask(model, [])
    mask = pruning.magnitude_prune(model, mask, pruning.kept(mask) // 2)
    hp = Train(epochs=epochs, batch_size=16, lr=0.05, schedule=Schedule(kind="cosine"))
    ckpt = Checkpoint(tmp_path / f"{name}.pt", "conv", every_s=every_s)
    history, _ = train(model, mask, splits, hp, cycles=list(cycles), seed=0, checkpoint=ckpt, on_epoch=on_epoch)
    return model, mask, history


@pytest.mark.parametrize("hidden", [[300, 100], [20]])  # the first product in oneDNN, or in torch's own
def test_an_epochs_loss_and_correct_count_are_its_batches_in_step_order(hidden):
    """train_epoch counts after the epoch what a running total on the device counted:
    with the LR at 0 the model stays put, so every batch can be scored again afterwards."""
    import torch.nn.functional as F

    from prunegen.engine.data import Dataset, to_float
    from prunegen.engine.splits import make_splits
    from prunegen.engine.training import make_optimizer, train_epoch
    from prunegen.study.hparams import Schedule, Train

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (100, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (100,), generator=g)
    ds = Dataset("mnist", x, y, x[:4], y[:4], 10, (33.3,), (78.6,), False)
    splits = make_splits(ds, val_size=0, noise=0.0, noise_mode="other_class", seed=0, augment=False, device="cpu")
    hp = Train(epochs=1, batch_size=32, lr=0.0, schedule=Schedule(kind="constant"))  # 4 steps, the last of 4
    torch.manual_seed(0)
    model = models.build_model({"name": "mlp", "hidden": hidden}, input_shape=(1, 28, 28), num_classes=10)
    before = [p.clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(7)
    perm = torch.randperm(len(splits.train), generator=g.clone_state())
    loss_sum, correct = train_epoch(model, make_optimizer(model, hp), [], splits, hp, g, 0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))

    want_loss, want_correct = torch.zeros(()), 0
    with torch.no_grad():
        for i in range(0, len(perm), hp.batch_size):
            idx = perm[i:i + hp.batch_size]
            out = model(to_float(splits.train.x[idx], splits.mean, splits.std))
            want_loss += F.cross_entropy(out, splits.train.y[idx]) * len(idx)
            want_correct += int((out.argmax(1) == splits.train.y[idx]).sum())
    assert loss_sum == float(want_loss)  # the same fp32 sums, bit for bit
    assert correct == want_correct and 0 < correct < len(perm)


def test_channels_last_on_cuda_for_conv_nets_and_on_cpu_from_16_channels():
    from prunegen.engine.training import use_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    def resnet(width):
        return models.build_model({"name": "resnet20"}, input_shape=(3, 32, 32), num_classes=10, width=width)

    assert use_channels_last(resnet(4), cuda) and use_channels_last(resnet(16), cuda)
    assert use_channels_last(resnet(16), cpu) and not use_channels_last(resnet(15), cpu)
    assert not use_channels_last(resnet(4), cpu)

    def vgg(width):
        return models.build_model({"name": "vgg16"}, input_shape=(3, 32, 32), num_classes=10, width=width)

    assert use_channels_last(vgg(16), cpu) and not use_channels_last(vgg(8), cpu)  # 16..128 / 8..64 channels
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert not use_channels_last(mlp, cuda) and not use_channels_last(mlp, cpu)


def _assert_same_training(run, again):
    """Two (model, mask, history) runs: the same losses and the same bits, and the pruned
    weights still exactly zero."""
    (model, mask, history), (other, _, other_history) = run, again
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in other_history]
    for (n, p), q in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(p, q), n
    for n, m in mask.items():
        assert not model.get_parameter(n)[m == 0].any(), n


@pytest.mark.parametrize("width", [4, 16])
def test_a_conv_model_trains_deterministically_on_cpu(tmp_path, width):
    run = _synthetic_run(tmp_path, "a", epochs=2, width=width)
    assert run[0].conv.weight.is_contiguous(memory_format=torch.channels_last) == (width == 16)
    _assert_same_training(run, _synthetic_run(tmp_path, "b", epochs=2, width=width))


def test_an_mlp_with_onednn_products_trains_deterministically_on_cpu(tmp_path):

    run = _synthetic_run(tmp_path, "a", epochs=2, model="mlp")
    assert kernels.uses_onednn(torch.zeros(16, 3072), run[0].fc1.weight)  # a training batch's first product
    _assert_same_training(run, _synthetic_run(tmp_path, "b", epochs=2, model="mlp"))


@pytest.mark.parametrize("model", ["resnet20", "mlp"])
def test_a_channels_last_conv_model_or_a_onednn_mlp_resumes_bit_identically_on_cpu(tmp_path, model):
    class Killed(Exception):
        pass

    def kill_in_epoch_2(cycle, epoch, model):  # runs before epoch 2's checkpoint is written
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        _synthetic_run(tmp_path, "killed", epochs=3, width=16, on_epoch=kill_in_epoch_2, model=model)
    assert torch.load(tmp_path / "killed.pt", weights_only=True)["epoch"] == 1
    resumed = _synthetic_run(tmp_path, "killed", epochs=3, width=16, model=model)
    assert len(resumed[2]) == 3
    _assert_same_training(resumed, _synthetic_run(tmp_path, "straight", epochs=3, width=16, model=model))


def test_bf16_autocast_on_cuda_only_and_the_mixed_precision_step_keeps_fp32_masters(monkeypatch, tmp_path):
    """The CUDA path's precision switch, run on CPU: with autocast forced on (CPU bf16), the
    training forward runs in bf16 while weights and the loss stay fp32 and the pruned weights
    stay exactly zero; evaluation stays fp32 (the per-example records come from it)."""
    import warnings

    from prunegen.engine.data import Dataset
    from prunegen.engine.splits import make_splits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast"
        cuda = training.autocast(torch.device("cuda"))
    assert (cuda.device, cuda.fast_dtype, cuda._enabled) == ("cuda", torch.bfloat16, torch.cuda.is_available())
    with training.autocast(torch.device("cpu")):  # off on CPU: plain fp32
        assert not torch.is_autocast_enabled("cpu")

    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(8, dtype=torch.long)
    ds = Dataset("cifar10", x, y, x, y, 10, (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), False)
    splits = make_splits(ds, val_size=0, noise=0.0, noise_mode="other_class", seed=0, augment=False, device="cpu")

    def run(name):
        model, mask, history = _synthetic_run(tmp_path, name, epochs=1, width=16)
        seen = []
        hook = model.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        loss, _ = training.evaluate(model, splits.test, splits, 4, channels_last=True)
        hook.remove()
        return model, mask, history, loss, seen

    _, _, fp32_history, _, seen = run("fp32")
    assert seen == [torch.float32, torch.float32]
    monkeypatch.setattr(training, "autocast", lambda device: torch.autocast(device.type, dtype=torch.bfloat16))
    model, mask, history, loss, seen = run("bf16")
    assert seen == [torch.float32, torch.float32]  # evaluation's two batches did not run under autocast
    assert history[0]["train_loss"] != fp32_history[0]["train_loss"]  # training did
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for n, m in mask.items():
        assert not model.get_parameter(n)[m == 0].any(), n


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_conv_model_trains_on_cuda_channels_last_in_bf16_with_fp32_masters(tmp_path):
    model, mask, history = _synthetic_run(tmp_path, "cuda", epochs=2, width=16, device="cuda")
    assert model.conv.weight.is_cuda and model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert len(history) == 2 and all(math.isfinite(h["train_loss"]) for h in history)
    for n, m in mask.items():
        assert not model.get_parameter(n)[m == 0].any(), n


def test_the_cpu_model_is_read_from_cpuinfo_and_the_label_says_cpus_and_threads(tmp_path):

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\n")
    assert provenance.cpu_model(info) == "AMD EPYC 7B13"
    assert provenance.cpu_model(tmp_path / "absent") == (platform.processor() or platform.machine())
    m = {"cpu": "AMD EPYC 7B13", "cpus": 2, "torch_threads": 1, "gpu": None}
    assert provenance.machine_label(m) == "2 x AMD EPYC 7B13 CPUs, 1 torch thread per cell"
    assert provenance.machine_label({**m, "cpus": 1, "torch_threads": 4, "gpu": "NVIDIA H200"}) == \
        "1 x AMD EPYC 7B13 CPU, 4 torch threads per cell, GPU NVIDIA H200"
