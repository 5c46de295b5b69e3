"""The index of an image-folder dataset's files (prunegen.engine.folder_index): the list is
torchvision's ImageFolder's, read from the index while no walked folder changed, listed again
when one did, when the index is torn, or when it cannot be written (never an error)."""

import errno
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from prunegen.engine import folder_index

HOUR_AGO = time.time() - 3600


def _tree(root: Path) -> Path:
    """Two splits with what ImageFolder's list has to get right: nested folders, a link to a
    folder, files that are not images, upper-case extensions, a class val/ lacks; every folder
    an hour old (not "racy")."""
    files = ["train/cat/b.jpg", "train/cat/a.PNG", "train/cat/notes.txt", "train/cat/deep/z.jpeg",
             "train/cat/deep/er/y.jpg", "train/cat/deep er/x.jpg", "train/dog/c.jpg", "train/dog/a.webp",
             "train/emu/e.bmp", "val/cat/v.jpg", "val/emu/w.JPG", "other/o1.jpg", "other/o2.png"]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    (root / "train" / "dog" / "linked").symlink_to(root / "other", target_is_directory=True)
    _age(root)
    return root


def _age(root: Path) -> None:
    for here, dirs, _ in os.walk(root):
        for d in dirs:
            os.utime(Path(here) / d, (HOUR_AGO, HOUR_AGO), follow_symlinks=False)


def _torchvision(root: Path):
    classes, class_to_idx = find_classes(str(root / "train"))
    out = {}
    for split in ("train", "val"):
        items = make_dataset(str(root / split), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        out[split] = ([os.fsencode(p) for p, _ in items], [c for _, c in items])
    return classes, out


def _as_lists(got):
    return {s: (paths.tolist(), labels.tolist()) for s, (paths, labels) in got.items()}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv(folder_index.ENV, str(tmp_path / "index"))
    return _tree(tmp_path / "data")


def test_the_list_is_imagefolders_and_the_second_is_read_from_the_index(tree, monkeypatch):
    classes, want = _torchvision(tree)
    assert len(want["train"][0]) == 10 and len(want["val"][0]) == 2  # (the tree is what it says)
    first = folder_index.listing(tree, classes, IMG_EXTENSIONS)
    assert _as_lists(first) == want
    assert folder_index.index_path(tree).is_file()

    def no_listing(*a):
        raise AssertionError("listed again")

    monkeypatch.setattr(folder_index.os, "scandir", no_listing)
    assert _as_lists(folder_index.listing(tree, classes, IMG_EXTENSIONS)) == want


@pytest.mark.parametrize("change", ["add a file", "remove a file", "add a folder", "rename a file in a link"])
def test_a_change_in_any_walked_folder_lists_again(tree, change):
    classes, _ = _torchvision(tree)
    folder_index.listing(tree, classes, IMG_EXTENSIONS)
    if change == "add a file":
        (tree / "train/cat/deep/er/new.jpg").write_bytes(b"")
    elif change == "remove a file":
        (tree / "train/dog/c.jpg").unlink()
    elif change == "add a folder":
        (tree / "train/emu/more").mkdir()
        (tree / "train/emu/more/m.jpg").write_bytes(b"")
    else:  # the folder behind train/dog/linked
        (tree / "other/o1.jpg").rename(tree / "other/o0.jpg")
    _, want = _torchvision(tree)
    assert _as_lists(folder_index.listing(tree, classes, IMG_EXTENSIONS)) == want


def test_a_folder_changed_just_before_the_listing_is_not_trusted(tree, monkeypatch):
    """Racy: a folder whose time is within a tick of the listing could change again unseen."""
    classes, want = _torchvision(tree)
    (tree / "train/cat/a2.jpg").write_bytes(b"")  # now: train/cat's time is fresh
    folder_index.listing(tree, classes, IMG_EXTENSIONS)
    walks = []
    walk = folder_index._walk
    monkeypatch.setattr(folder_index, "_walk", lambda *a: walks.append(a[1]) or walk(*a))
    folder_index.listing(tree, classes, IMG_EXTENSIONS)
    assert walks == ["train", "val"]  # listed again
    _age(tree)
    folder_index.listing(tree, classes, IMG_EXTENSIONS)  # records settled times
    walks.clear()
    folder_index.listing(tree, classes, IMG_EXTENSIONS)
    assert walks == []


def test_a_torn_index_is_listed_again_and_replaced(tree, caplog):
    classes, want = _torchvision(tree)
    folder_index.listing(tree, classes, IMG_EXTENSIONS)
    path = folder_index.index_path(tree)
    path.write_bytes(path.read_bytes()[:200])
    assert _as_lists(folder_index.listing(tree, classes, IMG_EXTENSIONS)) == want
    assert "unreadable" in caplog.text and str(path) in caplog.text
    with np.load(path) as z:  # rewritten whole
        assert len(z["train_paths"]) == 10


def test_an_index_of_other_classes_is_not_used(tree):
    classes, want = _torchvision(tree)
    folder_index.listing(tree, classes, IMG_EXTENSIONS)
    fewer = folder_index.listing(tree, classes[:2], IMG_EXTENSIONS)  # (a study naming other classes)
    assert set(fewer["train"][1].tolist()) == {0, 1}


def test_an_index_that_cannot_be_written_costs_the_listing_only(tmp_path, monkeypatch, caplog):
    tree = _tree(tmp_path / "data")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(folder_index.ENV, str(tmp_path / "a-file" / "index"))  # not a folder
    classes, want = _torchvision(tree)
    assert _as_lists(folder_index.listing(tree, classes, IMG_EXTENSIONS)) == want
    assert "cannot be written" in caplog.text


def test_the_index_lives_in_the_home_cache_unless_told(monkeypatch, tmp_path):
    monkeypatch.delenv(folder_index.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert folder_index.index_path(Path("/data/imagenet")).parent == tmp_path / "cache" / "prunegen" / "folders"
    monkeypatch.setenv(folder_index.ENV, str(tmp_path / "x"))
    assert folder_index.index_path(Path("/data/imagenet")).parent == tmp_path / "x"
    assert folder_index.index_path(Path("/data/imagenet")) != folder_index.index_path(Path("/data/imagenet2"))


def test_processes_starting_together_list_once(tree, monkeypatch):
    """The ranks of a data-parallel cell start at once: one lists (under the lock) while the
    others wait, then read its index."""
    classes, want = _torchvision(tree)
    walks, walk = [], folder_index._walk
    monkeypatch.setattr(folder_index, "_walk", lambda *a: walks.append(a[1]) or time.sleep(0.2) or walk(*a))
    got = []
    threads = [threading.Thread(target=lambda: got.append(folder_index.listing(tree, classes, IMG_EXTENSIONS)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert walks == ["train", "val"]  # one listing of the two splits, not four
    assert len(got) == 4 and all(_as_lists(g) == want for g in got)


def test_without_a_lock_to_be_had_the_index_is_written_all_the_same(tree, monkeypatch, caplog):
    """A file system without locks (NFS without lockd: ENOLCK): each process lists, and the
    index is still written (atomically) for the next."""
    def no_lock(self, *a, **k):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(folder_index.FileLock, "acquire", no_lock)
    classes, want = _torchvision(tree)
    with caplog.at_level(logging.INFO, logger=folder_index.__name__):
        assert _as_lists(folder_index.listing(tree, classes, IMG_EXTENSIONS)) == want
    assert "no lock" in caplog.text and folder_index.index_path(tree).is_file()
