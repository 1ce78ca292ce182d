"""Tests of selfvae.datasets: CIFAR pickles, image folders, the built-in default dataset, the splits.

All inputs are small files made here in the real formats; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import pickle

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from selfvae import datasets
from selfvae.datasets import DataError, Splits, image_folder, load_dataset, load_splits, photo_patches, split_changes
from selfvae.datasets.splits import hash_assign, permutation_test_split


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder through $SELFVAE_CACHE."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SELFVAE_CACHE", str(cache))
    return cache


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #

PER_BATCH = 20  # 5 batches -> 100 images -> 15 test


def make_cifar(folder, per_batch=PER_BATCH, seed=0):
    """Write data_batch_1..5 like the official python version; return (data (N, 3072), labels (N,))."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    all_data, all_labels = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch).tolist()
        batch = {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"labels": y,
            b"data": x,
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
        all_data.append(x)
        all_labels += y
    return np.concatenate(all_data), np.asarray(all_labels)


def all_splits(name, **kw):
    s = load_splits(name, **kw)
    return s.train, s.validation, s.test


def by_name(*parts):
    """{file name: (3, S, S) uint8 numpy} over the given splits of a folder dataset."""
    return {os.path.basename(p): x.numpy() for ds in parts for p, x in zip(ds.paths, ds.images)}


def spy(monkeypatch, module, name):
    """Count the calls of ``module.name`` (e.g. the builder behind a cache)."""
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def save_png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)


# --------------------------------------------------------------------------- #
# general
# --------------------------------------------------------------------------- #


def test_dataset_names_and_unknown_name():
    assert datasets.DATASETS == ("default", "photos", "cifar10", "imagenette", "celeba", "folder")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "train")
    for n in datasets.DATASETS:
        assert n in str(e.value)


def test_bad_split_and_fractions():
    with pytest.raises(DataError, match="split"):
        load_dataset("default", "val")
    for bad in (1.5, 1.0, -0.1, "0.1", True):
        with pytest.raises(DataError, match="test_fraction"):
            load_splits("default", test_fraction=bad)
    for bad in (0.0, 1.0, 2, -0.5, None):
        with pytest.raises(DataError, match="validation_fraction"):
            load_dataset("default", "train", validation_fraction=bad)


def test_permutation_test_split():
    tr, te = permutation_test_split(100, 3, 0.15)
    assert len(te) == 15 and len(tr) == 85
    assert set(tr).isdisjoint(te) and sorted(set(tr) | set(te)) == list(range(100))
    assert np.array_equal(te, permutation_test_split(100, 3, 0.15)[1])
    assert not np.array_equal(te, permutation_test_split(100, 4, 0.15)[1])
    tr1, te1 = permutation_test_split(1, 0, 0.15)
    assert list(tr1) == [0] and len(te1) == 0
    assert len(permutation_test_split(3, 0, 0.15)[1]) == 1  # at least one test image


def test_hash_assign_depends_on_each_item_only():
    names = [f"class_{i % 7}/img_{i:05d}.jpg" for i in range(3000)]
    full = dict(zip(names, hash_assign(names, 0, 0.15, 0.05)))
    counts = {s: list(full.values()).count(s) for s in ("train", "validation", "test")}
    assert abs(counts["test"] / 3000 - 0.15) < 0.03  # binomial: sd 0.0065
    assert abs(counts["validation"] / (3000 - counts["test"]) - 0.05) < 0.02
    part = names[::3] + [f"new_{i}.png" for i in range(50)]
    for name, split in zip(part, hash_assign(part, 0, 0.15, 0.05)):
        assert name.startswith("new_") or split == full[name]
    other_seed = hash_assign(names, 1, 0.15, 0.05)
    assert other_seed != list(full.values())
    # tiny collections still get a non-empty test and validation split
    tiny = hash_assign(["a.png", "b.png", "c.png"], 0, 0.15, 0.05)
    assert sorted(tiny) == ["test", "train", "validation"]
    assert hash_assign(["a.png"], 0, 0.15, 0.05) in (["train"], ["test"])


# --------------------------------------------------------------------------- #
# CIFAR-10
# --------------------------------------------------------------------------- #


def test_cifar_roundtrip_split_and_determinism(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    raw, labels = make_cifar(root)
    tr, va, te = all_splits("cifar10", root=str(root), seed=0)
    n = 5 * PER_BATCH
    assert tr.images.dtype == torch.uint8 and tr.images.shape == (81, 3, 32, 32)
    assert va.images.shape == (4, 3, 32, 32) and te.images.shape == (15, 3, 32, 32)  # 4 = round(0.05 * 85)
    assert tr.name == "cifar10" and (tr.split, va.split, te.split) == ("train", "validation", "test")
    itr, iva, ite = tr.indices.numpy(), va.indices.numpy(), te.indices.numpy()
    assert sorted(np.concatenate([itr, iva, ite])) == list(range(n))  # disjoint, and together everything
    # exact round trip: pixel (c, r, col) of image g is data[g, c*1024 + r*32 + col]
    for ds in (tr, va, te):
        for j, g in enumerate(ds.indices.tolist()):
            assert np.array_equal(ds.images[j].numpy().reshape(-1), raw[g])
            assert ds.labels[j].item() == labels[g]
    g = int(itr[7])
    j = 7
    assert tr[j][1, 5, 9].item() == raw[g, 1 * 1024 + 5 * 32 + 9]
    assert tr[j].shape == (3, 32, 32) and tr[j].dtype == torch.uint8
    # determinism and dependence on the seed
    te2 = load_dataset("cifar10", "test", root=str(root), seed=0)
    assert torch.equal(te.indices, te2.indices) and torch.equal(te.images, te2.images)
    te3 = load_dataset("cifar10", "test", root=str(root), seed=1)
    assert not torch.equal(te.indices, te3.indices)
    # the parent of cifar-10-batches-py is accepted too
    te4 = load_dataset("cifar10", "test", root=str(tmp_path), seed=0)
    assert torch.equal(te.images, te4.images)


def test_cifar_known_pixel(tmp_path):
    root = tmp_path / "c"
    raw, _ = make_cifar(root, per_batch=4)
    # overwrite batch 3, image 2: red plane = 11, green = row index, blue = column index
    with open(root / "data_batch_3", "rb") as f:
        batch = pickle.load(f)
    img = np.zeros((3, 32, 32), np.uint8)
    img[0] = 11
    img[1] = np.arange(32)[:, None]
    img[2] = np.arange(32)[None, :]
    batch[b"data"][2] = img.reshape(-1)
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    g = 2 * 4 + 2
    ds = next(d for d in all_splits("cifar10", root=str(root)) if g in d.indices.tolist())
    x = ds[ds.indices.tolist().index(g)]
    assert torch.equal(x, torch.from_numpy(img))
    assert x[1, 20, 3].item() == 20 and x[2, 20, 3].item() == 3 and x[0, 0, 31].item() == 11


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", "train", root=str(tmp_path / "nowhere"))
    root = tmp_path / "c"
    make_cifar(root, per_batch=2)
    with pytest.raises(DataError, match="32x32"):
        load_dataset("cifar10", "train", root=str(root), image_size=64)
    os.remove(root / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", "train", root=str(root))
    make_cifar(root, per_batch=2)

    good = (root / "data_batch_2").read_bytes()
    (root / "data_batch_2").write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match=r"data_batch_2.*corrupt"):
        load_dataset("cifar10", "train", root=str(root))
    (root / "data_batch_2").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"data_batch_2.*(corrupt|truncated)"):
        load_dataset("cifar10", "train", root=str(root))
    (root / "data_batch_2").write_bytes(good)

    with open(root / "data_batch_4", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_4.*3072"):
        load_dataset("cifar10", "train", root=str(root))
    with open(root / "data_batch_4", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_4.*labels"):
        load_dataset("cifar10", "train", root=str(root))
    with open(root / "data_batch_4", "wb") as f:
        pickle.dump([1, 2, 3], f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_4.*dict"):
        load_dataset("cifar10", "train", root=str(root))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    root = tmp_path / "c"
    make_cifar(root, per_batch=2)
    with open(root / "data_batch_5", "wb") as f:
        pickle.dump({b"data": _Evil()}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_5.*not allowed"):
        load_dataset("cifar10", "train", root=str(root))


# --------------------------------------------------------------------------- #
# image folders
# --------------------------------------------------------------------------- #


def _pattern(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_folder_conversions(tmp_path):
    root = tmp_path / "imgs"
    rgb = _pattern(seed=1)
    save_png(root / "a_rgb.png", rgb)
    gray = _pattern(seed=2)[..., 0]
    save_png(root / "b_gray.png", gray)
    rgba = np.dstack([_pattern(seed=3), np.full((8, 8), 255, np.uint8)])
    rgba[0, 0, 3] = 0  # transparent -> white
    rgba[0, 1, 3] = 128  # half
    save_png(root / "c_rgba.png", rgba)
    la = np.dstack([gray, np.full((8, 8), 255, np.uint8)])
    la[2, 2, 1] = 0
    save_png(root / "d_la.png", la, "LA")
    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000 + 123).astype(np.uint16)
    cv2.imwrite(str(root / "e_gray16.png"), g16)
    c16 = np.dstack([g16, 65535 - g16, g16 // 3]).astype(np.uint16)  # BGR
    cv2.imwrite(str(root / "f_rgb16.png"), c16)
    pal = Image.fromarray((np.arange(64).reshape(8, 8) % 3).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    pal.save(root / "g_palette.png")
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rgb).save(root / "sub" / "deeper" / "h_upper.BMP")
    smooth = np.dstack([*np.meshgrid(np.arange(8) * 30, np.arange(8) * 20, indexing="ij"), np.full((8, 8), 99)])
    smooth = smooth.astype(np.uint8)
    Image.fromarray(smooth).save(root / "sub" / "i_photo.JPG", quality=95)
    Image.fromarray(rgb).save(root / "sub" / "j_lossless.webp", lossless=True)
    (root / "notes.txt").write_text("not an image")
    save_png(root / ".hidden.png", rgb)

    tr, va, te = all_splits("folder", root=str(root), image_size=8)
    assert len(tr) + len(va) + len(te) == 10 and len(te) >= 1 and len(va) >= 1
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (3, 8, 8)
    assert tr.name == "folder8"
    got = by_name(tr, va, te)
    assert len(got) == 10
    assert ".hidden.png" not in got and "notes.txt" not in got
    chw = lambda a: a.transpose(2, 0, 1)  # noqa: E731
    assert np.array_equal(got["a_rgb.png"], chw(rgb))
    assert np.array_equal(got["b_gray.png"], np.repeat(gray[None], 3, 0))
    exp = rgba[..., :3].astype(np.int64)
    exp[0, 0] = 255
    exp[0, 1] = (rgba[0, 1, :3].astype(np.int64) * 128 + 255 * 127 + 127) // 255
    assert np.array_equal(got["c_rgba.png"], chw(exp))
    exp_la = np.repeat(gray[None], 3, 0)
    exp_la[:, 2, 2] = 255
    assert np.array_equal(got["d_la.png"], exp_la)
    assert np.array_equal(got["e_gray16.png"], np.repeat((g16 >> 8).astype(np.uint8)[None], 3, 0))
    assert np.array_equal(got["f_rgb16.png"], chw((c16[..., ::-1] >> 8).astype(np.uint8)))
    lut = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    assert np.array_equal(got["g_palette.png"], chw(lut[np.arange(64).reshape(8, 8) % 3]))
    assert np.array_equal(got["h_upper.BMP"], chw(rgb))
    assert np.array_equal(got["j_lossless.webp"], chw(rgb))
    assert np.abs(got["i_photo.JPG"].astype(int) - chw(smooth).astype(int)).mean() < 6
    # paths are sorted by relative path; indices follow that order
    # within a split the images follow the sorted relative paths
    for ds in (tr, va, te):
        rel = [os.path.relpath(p, root) for p in ds.paths]
        assert rel == sorted(rel) and ds.indices.tolist() == sorted(ds.indices.tolist())


def test_folder_center_crop_and_resize(tmp_path):
    root = tmp_path / "f"
    img = np.zeros((8, 12, 3), np.uint8)
    img[:, 2:10] = _pattern(seed=5)
    img[:, :2] = img[:, 10:] = (0, 255, 0)
    save_png(root / "wide.png", img)
    tall = np.full((40, 20, 3), 50, np.uint8)
    tall[10:30] = 200
    save_png(root / "tall.png", tall)
    got = by_name(*all_splits("folder", image_size=8, root=str(root), test_fraction=0.0))
    assert np.array_equal(got["wide.png"], img[:, 2:10].transpose(2, 0, 1))
    # tall: the centre square (rows 10..29) is uniform 200; nothing outside it leaks in
    assert (got["tall.png"] == 200).all()
    big = by_name(*all_splits("folder", image_size=32, root=str(root), test_fraction=0.0))
    assert {k: v.shape for k, v in big.items()} == {"wide.png": (3, 32, 32), "tall.png": (3, 32, 32)}


def test_celeba_crop(tmp_path):
    root = tmp_path / "img_align_celeba"
    img = np.zeros((218, 178, 3), np.uint8)
    img[:] = (0, 255, 0)
    crop = np.random.default_rng(0).integers(0, 256, size=(148, 148, 3), dtype=np.uint8)
    img[40:188, 15:163] = crop
    save_png(root / "000001.png", img)
    flat = img.copy()
    flat[40:188, 15:163] = (200, 10, 90)
    save_png(root / "000002.png", flat)
    splits = load_splits("celeba", image_size=148, root=str(root), test_fraction=0.0)
    assert splits.train.name == "celeba148"
    assert np.array_equal(by_name(splits.train, splits.validation)["000001.png"], crop.transpose(2, 0, 1))
    small = by_name(*all_splits("celeba", root=str(root), test_fraction=0.0))
    assert small["000001.png"].shape == (3, 64, 64)  # default size 64
    # none of the green border leaks in
    assert (small["000002.png"] == np.array([200, 10, 90], np.uint8)[:, None, None]).all()
    # an image too small for the crop is an error naming the file
    save_png(root / "000003.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(DataError, match="000003.png.*too small"):
        load_dataset("celeba", "train", root=str(root))


def test_imagenette_uses_train_subfolder(tmp_path):
    root = tmp_path / "imagenette2-160"
    for i in range(4):
        save_png(root / "train" / "n01440764" / f"t{i}.png", _pattern(20, 30, seed=i))
    save_png(root / "val" / "n01440764" / "v0.png", _pattern(20, 30, seed=9))
    tr, va, te = all_splits("imagenette", root=str(root))
    assert len(tr) + len(va) + len(te) == 4 and tr.images.shape[1:] == (3, 64, 64) and tr.name == "imagenette64"
    assert all("/train/" in p.replace(os.sep, "/") for p in tr.paths + va.paths + te.paths)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        load_dataset("folder", "train", root=str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty.*no image files"):
        load_dataset("folder", "train", root=str(empty))
    with pytest.raises(DataError, match="root"):
        load_dataset("celeba", "train")

    root = tmp_path / "bad"
    save_png(root / "good.png", _pattern())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_dataset("folder", "train", root=str(root))
    os.remove(root / "broken.jpg")
    whole = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="truncated.png"):
        load_dataset("folder", "train", root=str(root))
    with pytest.warns(RuntimeWarning, match="truncated.png"):
        ds = load_dataset("folder", "train", root=str(root), image_size=8, test_fraction=0.0, on_bad_image="skip")
    assert len(ds) == 1 and ds.paths[0].endswith("good.png")


def test_folder_cache_reuse_and_invalidation(tmp_path, _cache, monkeypatch):
    root = tmp_path / "f"
    for i in range(3):
        save_png(root / f"{i}.png", _pattern(seed=i))
    builds = spy(monkeypatch, image_folder, "decode_folder")
    a = by_name(*all_splits("folder", image_size=8, root=str(root), test_fraction=0.0))
    assert len(builds) == 1
    files = list(_cache.glob("folder8-*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = all_splits("folder", image_size=8, root=str(root), seed=5)
    assert len(builds) == 1  # served from the cache, whatever the split
    assert files[0].stat().st_mtime_ns == mtime
    assert sum(len(ds) for ds in b) == 3
    assert not list(_cache.glob(".tmp-*"))  # no temp file left behind
    # a new file invalidates the cache
    save_png(root / "3.png", _pattern(seed=3))
    d = by_name(*all_splits("folder", image_size=8, root=str(root), test_fraction=0.0))
    assert len(d) == 4 and len(builds) == 2
    # changed content (and mtime) of an existing file invalidates it too
    new = _pattern(seed=42)
    save_png(root / "0.png", new)
    st = os.stat(root / "0.png")
    os.utime(root / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    e = by_name(*all_splits("folder", image_size=8, root=str(root), test_fraction=0.0))
    assert np.array_equal(e["0.png"], new.transpose(2, 0, 1)) and not np.array_equal(a["0.png"], e["0.png"])
    assert len(list(_cache.glob("folder8-*.npz"))) == 1  # stale cache files are removed
    # a corrupt cache file is ignored and rebuilt
    cache_file = next(_cache.glob("folder8-*.npz"))
    cache_file.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable dataset cache"):
        f = by_name(*all_splits("folder", image_size=8, root=str(root), test_fraction=0.0))
    assert all(np.array_equal(f[k], e[k]) for k in e) and len(builds) == 4


def test_dataset_with_dataloader(tmp_path):
    root = tmp_path / "f"
    for i in range(8):
        save_png(root / f"{i}.png", _pattern(seed=i))
    ds = load_dataset("folder", "train", image_size=8, root=str(root), test_fraction=0.0)
    assert len(ds) >= 4
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 8, 8) and batch.dtype == torch.uint8


# --------------------------------------------------------------------------- #
# default dataset
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("default_cache"))


@pytest.mark.parametrize("size", [32, 64])
def test_default_dataset(size, default_cache):
    tr, va, te = all_splits("default", image_size=size, cache_dir=default_cache)
    assert tr.name == f"default{size}"
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (3, size, size)
    assert te.images.shape[1:] == (3, size, size)
    assert len(tr) >= 1500 and len(te) >= (500 if size == 32 else 120)
    assert tr.coords.dtype == torch.int64 and tr.coords.shape == (len(tr), 3)
    assert te.coords.shape == (len(te), 3)
    # the test split is whole photographs that give no training patch, and vice versa
    test_photos = {k for k, s in enumerate(datasets.DEFAULT_SOURCES) if s["split"] == "test"}
    assert {s["name"] for s in datasets.DEFAULT_SOURCES if s["split"] == "test"} == {"coffee", "motorcycle_left"}
    seen = torch.cat([tr.coords, va.coords])  # validation patches are training-side patches
    assert set(te.coords[:, 0].tolist()) == test_photos
    assert set(seen[:, 0].tolist()) == set(range(len(datasets.DEFAULT_SOURCES))) - test_photos
    # images are the patches their coordinates name
    photos = datasets.load_default_photos()
    for ds in (tr, va, te):
        for j in np.linspace(0, len(ds) - 1, 25).astype(int):
            k, r, c = ds.coords[j].tolist()
            assert np.array_equal(ds.images[j].numpy(), photos[k][r : r + size, c : c + size].transpose(2, 0, 1))
    # each test photograph is tiled without overlap, every tile kept
    for k in test_photos:
        h, w = photos[k].shape[:2]
        xy = te.coords[te.coords[:, 0] == k][:, 1:].tolist()
        assert sorted(map(tuple, xy)) == [(r, c) for r in range(0, h - size + 1, size)
                                          for c in range(0, w - size + 1, size)]
    # no duplicate training patches
    assert len({tuple(x) for x in seen.tolist()}) == len(tr) + len(va)
    info = datasets.default_dataset_info(size, cache_dir=default_cache)
    assert info["n_train"] == len(tr) + len(va) and info["n_test"] == len(te)
    assert sum(p["n_train"] for p in info["photos"]) == info["n_train"]
    assert all(p["licence"] for p in info["photos"])


def test_default_cache_reuse_and_seed(default_cache, tmp_path, monkeypatch):
    load_dataset("default", "train", image_size=32, cache_dir=default_cache)
    builds = spy(monkeypatch, photo_patches, "build_patches")
    files = sorted(f for f in os.listdir(default_cache) if f.startswith("default32-"))
    mtimes = [os.stat(os.path.join(default_cache, f)).st_mtime_ns for f in files]
    a = load_splits("default", image_size=32, cache_dir=default_cache)
    assert builds == []
    assert [os.stat(os.path.join(default_cache, f)).st_mtime_ns for f in files] == mtimes
    # another seed draws other validation patches; the test photographs are fixed
    b = load_splits("default", image_size=32, cache_dir=default_cache, seed=1)
    assert builds == []
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.validation.coords, b.validation.coords)
    # the default size is 32, root and test_fraction are ignored
    c = load_dataset("default", "test", root="/does/not/matter", cache_dir=default_cache, test_fraction=0.5)
    assert torch.equal(c.images, a.test.images)


def test_default_bad_size():
    with pytest.raises(DataError, match="32, 64"):
        load_dataset("default", "train", image_size=48)


def test_default_sources_documented():
    for s in datasets.DEFAULT_SOURCES:
        assert {"name", "file", "licence", "source", "scale"} <= set(s)
        assert s["split"] in ("train", "test")
        if s["split"] == "train":  # what the model learns from is free to use
            assert any(w in s["licence"] for w in ("Public domain", "CC0", "No known copyright"))


# --------------------------------------------------------------------------- #
# "photos": a folder of photographs, patches at native resolution, split by photograph
# --------------------------------------------------------------------------- #


def _photo(h, w, seed):
    """A smooth random RGB photo-like image (not flat anywhere)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(big.astype(np.int16) + rng.integers(-6, 7, size=big.shape), 0, 255).astype(np.uint8)


def test_photos_dataset_splits_by_subfolder(tmp_path):
    root = tmp_path / "corpus"
    shapes = {"train/a.png": (100, 130), "train/b.png": (70, 64), "heldout/c.png": (96, 75),
              "heldout/d.png": (33, 40), "notes/e.png": (64, 64)}  # e is in neither split folder
    arrays = {}
    for i, (rel, (h, w)) in enumerate(shapes.items()):
        arrays[rel] = _photo(h, w, i)
        save_png(root / rel, arrays[rel])
    s = load_splits("photos", image_size=32, root=str(root))
    files = s.train.info["files"]
    assert files == ["heldout/c.png", "heldout/d.png", "train/a.png", "train/b.png"]
    assert "sub-folders" in s.train.info["split_by"]
    for ds in (s.train, s.validation, s.test):
        for img, (k, r, c) in zip(ds.images, ds.coords.tolist()):
            assert np.array_equal(img.numpy(), arrays[files[k]][r:r + 32, c:c + 32].transpose(2, 0, 1))
    # whole photographs: the held-out ones give only test patches, tiled without overlap
    assert {files[k] for k in s.test.coords[:, 0].tolist()} == {"heldout/c.png", "heldout/d.png"}
    train_side = torch.cat([s.train.coords, s.validation.coords])
    assert {files[k] for k in train_side[:, 0].tolist()} == {"train/a.png", "train/b.png"}
    assert len(s.test) == (96 // 32) * (75 // 32) + (33 // 32) * (40 // 32)
    # training patches at stride 16: a 100x130 photo gives 5 x 7 windows, 70x64 gives 3 x 3
    assert len(train_side) == 5 * 7 + 3 * 3
    assert s.record["rule"].startswith("test: whole photographs")


def test_photos_dataset_hash_split_and_errors(tmp_path):
    root = tmp_path / "flat"
    for i in range(12):
        save_png(root / f"p{i:02d}.png", _photo(64, 64, i))
    s = load_splits("photos", image_size=32, root=str(root), test_fraction=0.3)
    files = s.test.info["files"]
    test_files = {files[k] for k in s.test.coords[:, 0].tolist()}
    train_files = {files[k] for k in torch.cat([s.train.coords, s.validation.coords])[:, 0].tolist()}
    assert test_files and train_files and not test_files & train_files
    assigned = hash_assign(files, 0, 0.3, 0.0)
    assert test_files == {f for f, a in zip(files, assigned) if a == "test"}
    # a corrupt file is named, or skipped with a warning
    (root / "p05.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(DataError, match="p05.png"):
        load_splits("photos", image_size=32, root=str(root), test_fraction=0.3)
    with pytest.warns(RuntimeWarning, match="p05.png"):
        t = load_splits("photos", image_size=32, root=str(root), test_fraction=0.3, on_bad_image="skip")
    assert "p05.png" not in t.train.info["files"]
    with pytest.raises(DataError, match="root"):
        load_splits("photos", image_size=32)
    tiny = tmp_path / "tiny"
    for i in range(3):
        save_png(tiny / f"t{i}.png", _photo(20, 20, i))
    with pytest.raises(DataError, match="no training patches|no test patches"):
        load_splits("photos", image_size=32, root=str(tiny), test_fraction=0.5)


# --------------------------------------------------------------------------- #
# augmentation
# --------------------------------------------------------------------------- #


# --------------------------------------------------------------------------- #
# splits: validation, stability, records
# --------------------------------------------------------------------------- #


def _trainer_draw(images, seed, validation_fraction=0.05):
    """What train.py did before load_splits existed: validation = perm[:n_val] of the train split."""
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + 1))
    n_val = max(1, int(round(validation_fraction * len(perm))))
    return images[perm[n_val:]], images[perm[:n_val]]


def test_validation_is_the_trainers_draw_for_fixed_datasets(tmp_path, default_cache):
    root = tmp_path / "c"
    make_cifar(root)
    for seed in (0, 3):
        s = load_splits("cifar10", root=str(root), seed=seed)
        tr_idx, _ = permutation_test_split(5 * PER_BATCH, seed, 0.15)
        full, _ = datasets.load_cifar10_images(str(root))[:2]
        train, validation = _trainer_draw(torch.from_numpy(full[tr_idx]), seed)
        assert torch.equal(s.train.images, train) and torch.equal(s.validation.images, validation)
    s = load_splits("default", cache_dir=default_cache)
    full = torch.from_numpy(photo_patches._default_arrays(32, default_cache)["train_images"])
    train, validation = _trainer_draw(full, 0)
    assert torch.equal(s.train.images, train) and torch.equal(s.validation.images, validation)


def _folder_of(root, n, start=0):
    for i in range(start, start + n):
        save_png(root / f"cls{i % 3}" / f"img{i:03d}.png", _pattern(seed=i))


def test_adding_a_file_moves_no_training_image_into_test(tmp_path):
    """The bug this guards against: the test split was redrawn from the image count, so one new file
    after training put training images into 'test'."""
    root = tmp_path / "f"
    _folder_of(root, 40)
    train_before = set(load_dataset("folder", "train", image_size=8, root=str(root)).paths)
    test_before = set(load_dataset("folder", "test", image_size=8, root=str(root)).paths)
    assert train_before and test_before
    for extra in range(40, 43):  # add files one at a time
        _folder_of(root, 1, start=extra)
        test_now = set(load_dataset("folder", "test", image_size=8, root=str(root)).paths)
        assert not train_before & test_now, "training images moved into the test split"
        assert test_before <= test_now
    os.remove(root / "cls1" / "img001.png")  # removing a file moves nothing either
    assert set(load_dataset("folder", "test", image_size=8, root=str(root)).paths) <= test_now


def test_folder_splits_stable_with_validation(tmp_path):
    root = tmp_path / "f"
    _folder_of(root, 60)
    before = load_splits("folder", image_size=8, root=str(root), seed=2)
    _folder_of(root, 5, start=60)
    after = load_splits("folder", image_size=8, root=str(root), seed=2)
    for split in ("train", "validation", "test"):
        old, new = set(getattr(before, split).paths), set(getattr(after, split).paths)
        assert old <= new and all("img06" in os.path.basename(p) for p in new - old)


def test_split_record_and_changes(tmp_path):
    root = tmp_path / "f"
    _folder_of(root, 40)
    s = load_splits("folder", image_size=8, root=str(root))
    assert isinstance(s, Splits)
    record = s.record
    assert json.loads(json.dumps(record)) == record  # plain JSON types
    assert record["dataset"] == "folder" and record["root"] == str(root) and os.path.isabs(record["root"])
    assert (record["image_size"], record["seed"], record["test_fraction"], record["validation_fraction"]) == \
        (8, 0, 0.15, 0.05)
    assert (record["n_train"], record["n_validation"], record["n_test"]) == (len(s.train), len(s.validation),
                                                                               len(s.test))
    assert len(record["digest"]) == 64 and int(record["digest"], 16) >= 0
    again = load_splits("folder", image_size=8, root=str(root)).record
    assert again == record and split_changes(record, again) == []
    _folder_of(root, 1, start=40)
    grown = load_splits("folder", image_size=8, root=str(root)).record
    assert grown["digest"] != record["digest"]
    assert split_changes(record, grown) == [
        f"the image folder {root} changed since the checkpoint: 40 images then, 41 now (split digest differs)"]
    reseeded = load_splits("folder", image_size=8, root=str(root), seed=1).record
    changes = split_changes(grown, reseeded)
    assert changes[0] == "seed 0 then, 1 now" and "split differs" in changes[-1]
    assert "test fraction 0.15 then, 0.2 now" in split_changes(
        grown, load_splits("folder", image_size=8, root=str(root), test_fraction=0.2).record)


def test_split_records_of_fixed_datasets(tmp_path, default_cache):
    root = tmp_path / "c"
    make_cifar(root)
    c = load_splits("cifar10", root=str(root)).record
    assert c["root"] == str(root) and (c["n_train"], c["n_validation"], c["n_test"]) == (81, 4, 15)
    assert c == load_splits("cifar10", root=str(root)).record
    assert split_changes(c, load_splits("cifar10", root=str(root), seed=1).record)[0] == "seed 0 then, 1 now"
    d = load_splits("default", cache_dir=default_cache).record
    assert d["root"] is None and d["dataset"] == "default" and json.loads(json.dumps(d)) == d
    assert split_changes(d, c)[0] == "dataset default then, cifar10 now"
    assert split_changes({}, d)[0] == "dataset (not recorded) then, default now"


def test_progress_false_writes_nothing(tmp_path, capfd):
    root = tmp_path / "f"
    _folder_of(root, 6)
    load_dataset("folder", "train", image_size=8, root=str(root), progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    save_png(root / "new.png", _pattern(seed=99))  # invalidate the cache: decode again, with the bar
    load_dataset("folder", "train", image_size=8, root=str(root), progress=True)
    assert "loading folder" in capfd.readouterr().err
