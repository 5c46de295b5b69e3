"""A stop signal during an epoch (issue 27): SIGTERM or SIGUSR2 checkpoints the cell at the
next step boundary, mid-epoch, and the resumed cell ends with the bits of one never stopped.
Checkpoints otherwise come by elapsed time and at each cycle's end."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml

from prunegen.engine import pruning, stopping
from prunegen.engine.checkpoints import Checkpoint
from prunegen.study.load import load_study
from tests.engine.test_cell import _run_cell_cmd, _same, _synthetic_run
from tests.helpers import SMOKE


@pytest.fixture
def stop_signals():
    previous = {sig: signal.getsignal(sig) for sig in stopping.SIGNALS}
    stopping.install()
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    stopping.reset()


def _signal_at_step(monkeypatch, sig: int, step: int) -> list[int]:
    """Send `sig` to this process from inside training step `step` (counted over the run),
    as a scheduler's signal would land: between two bytecodes of a step."""
    calls = []
    real = pruning.mask_grads

    def mask_grads(bound):
        calls.append(len(calls))
        if len(calls) == step + 1:
            os.kill(os.getpid(), sig)
        return real(bound)

    monkeypatch.setattr(pruning, "mask_grads", mask_grads)
    return calls


def _history(run):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in run[2]]


@pytest.mark.parametrize("model,sig,at", [
    ("resnet20", signal.SIGTERM, 5),  # the second step of the second epoch
    ("mlp", signal.SIGUSR2, 5),
    ("mlp", signal.SIGTERM, 1),  # in the cycle's first epoch: the optimizer is not started afresh
], ids=["resnet20-SIGTERM-epoch2", "mlp-SIGUSR2-epoch2", "mlp-SIGTERM-epoch1"])
def test_a_signal_mid_epoch_saves_that_step_and_the_resumed_cell_has_the_same_bits(
        stop_signals, monkeypatch, tmp_path, model, sig, at):
    steps_per_epoch = 4  # 64 examples at batch 16
    epoch, step = divmod(at, steps_per_epoch)
    _signal_at_step(monkeypatch, sig, at)
    with pytest.raises(stopping.StopRequested, match=f"stopped by {signal.Signals(sig).name} at cycle 0 "
                                                     f"epoch {epoch + 1} step {step + 1} of 4"):
        _synthetic_run(tmp_path, "stopped", epochs=3, width=16, model=model)
    state = torch.load(tmp_path / "stopped.pt", weights_only=True)
    assert state["epoch"] == epoch and state["partial"]["step"] == step + 1
    assert len(state["partial"]["losses"]) == step + 1 and len(state["history"]) == epoch

    monkeypatch.undo()
    stopping.reset()
    resumed = _synthetic_run(tmp_path, "stopped", epochs=3, width=16, model=model)
    straight = _synthetic_run(tmp_path, "straight", epochs=3, width=16, model=model)
    assert _history(resumed) == _history(straight)  # losses, accuracies: every float equal
    for (n, p), q in zip(resumed[0].state_dict().items(), straight[0].state_dict().values()):
        assert torch.equal(p, q), n


def test_a_signal_in_an_epochs_last_step_stops_after_the_epoch(stop_signals, monkeypatch, tmp_path):
    _signal_at_step(monkeypatch, signal.SIGTERM, 3)  # the last step of the first epoch
    with pytest.raises(stopping.StopRequested, match="after cycle 0 epoch 1"):
        _synthetic_run(tmp_path, "stopped", epochs=3, width=4)
    state = torch.load(tmp_path / "stopped.pt", weights_only=True)
    assert state["epoch"] == 1 and "partial" not in state


def test_checkpoints_come_by_elapsed_time_and_at_the_cycles_end(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    ckpt = Checkpoint(tmp_path / "c.pt", "x", every_s=60)
    assert not ckpt.due() and ckpt.due(cycle_end=True)
    now[0] = 59.9
    assert not ckpt.due()
    now[0] = 60.0
    assert ckpt.due()
    ckpt.save(epoch=1)
    assert not ckpt.due()
    assert Checkpoint(tmp_path / "d.pt", "x").due()  # every_s 0: every epoch


def test_a_checkpoint_at_each_cycles_end_whatever_the_interval(tmp_path):
    class Killed(Exception):
        pass

    def kill_in_cycle_1(cycle, epoch, model):  # before that epoch's checkpoint would be written
        if cycle == 1 and epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        _synthetic_run(tmp_path, "k", epochs=3, cycles=(0, 1), every_s=1e9, on_epoch=kill_in_cycle_1)
    state = torch.load(tmp_path / "k.pt", weights_only=True)
    assert (state["cycle_pos"], state["epoch"], len(state["history"])) == (0, 3, 3)


def _long_study(tmp_path, name, every_s):
    raw = yaml.safe_load(SMOKE.read_text())
    bm = raw["benchmarks"]["digits-mlp"]
    bm["model"]["hidden"] = [256, 128]
    bm["train"] |= {"epochs": 6, "batch_size": 8}  # 180 steps an epoch: a signal lands in one
    raw |= {"results_root": str(tmp_path / name), "checkpoint_every_s": every_s}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_run_cell_stops_at_a_signal_with_its_checkpoint_and_resumes_to_the_same_records(tmp_path, sig):
    """The command a SLURM job runs: signalled mid-training it saves and exits as the signal
    would end it (128 + the signal), and run again it ends with a never-stopped cell's records."""
    stopped_path, clean_path = _long_study(tmp_path, "stopped", 3600), _long_study(tmp_path, "clean", 3600)
    cell_dir = load_study(stopped_path).cell("digits-mlp", "dense", 0, 0.2, 0).dir
    proc = subprocess.Popen(_run_cell_cmd(stopped_path), stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # until training is under way
        lines.append(line)
        if "epoch 2/6" in line:
            break
    assert proc.poll() is None, "".join(lines)
    assert not (cell_dir / "checkpoint.pt").exists()  # every 3600 s: none yet
    os.kill(proc.pid, sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + sig, rest
    assert f"stopped by {signal.Signals(sig).name}" in rest and "run the cell again to resume it" in rest
    state = torch.load(cell_dir / "checkpoint.pt", weights_only=True)
    assert 2 <= state["epoch"] < 6 and not (cell_dir / "cell.json").exists()

    subprocess.run(_run_cell_cmd(stopped_path), check=True, capture_output=True)
    meta = json.loads((cell_dir / "cell.json").read_text())
    assert meta["resumed_from"]["epoch"] == state["epoch"]
    assert meta["resumed_from"].get("step") == state.get("partial", {}).get("step")
    subprocess.run(_run_cell_cmd(clean_path), check=True, capture_output=True)
    _same(cell_dir, load_study(clean_path).cell("digits-mlp", "dense", 0, 0.2, 0).dir)
