"""Tests of selfvae.data: CIFAR pickles, image folders, the built-in default dataset, augmentation.

All inputs are small files made here in the real formats; nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import pickle

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from selfvae import data
from selfvae.data import DataError, augment, load_dataset


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


def both_splits(name, **kw):
    return load_dataset(name, "train", **kw), load_dataset(name, "test", **kw)


def save_png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)


# --------------------------------------------------------------------------- #
# general
# --------------------------------------------------------------------------- #


def test_dataset_names_and_unknown_name():
    assert data.dataset_names() == ["default", "cifar10", "imagenette", "celeba", "folder"]
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "train")
    for n in data.dataset_names():
        assert n in str(e.value)


def test_bad_split_and_fraction():
    with pytest.raises(DataError, match="split"):
        load_dataset("default", "val")
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset("default", "train", test_fraction=1.5)


def test_split_indices():
    tr = data.split_indices(100, "train", seed=3)
    te = data.split_indices(100, "test", seed=3)
    assert len(te) == 15 and len(tr) == 85
    assert set(tr).isdisjoint(te) and sorted(set(tr) | set(te)) == list(range(100))
    assert np.array_equal(te, data.split_indices(100, "test", seed=3))
    assert not np.array_equal(te, data.split_indices(100, "test", seed=4))
    assert list(data.split_indices(1, "train")) == [0] and len(data.split_indices(1, "test")) == 0
    assert len(data.split_indices(3, "test")) == 1  # at least one test image


# --------------------------------------------------------------------------- #
# CIFAR-10
# --------------------------------------------------------------------------- #


def test_cifar_roundtrip_split_and_determinism(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    raw, labels = make_cifar(root)
    tr, te = both_splits("cifar10", root=str(root), seed=0)
    n = 5 * PER_BATCH
    assert tr.images.dtype == torch.uint8 and tr.images.shape == (85, 3, 32, 32)
    assert te.images.shape == (15, 3, 32, 32)
    assert tr.name == "cifar10" and tr.split == "train" and te.split == "test"
    itr, ite = tr.indices.numpy(), te.indices.numpy()
    assert set(itr).isdisjoint(ite) and sorted(np.concatenate([itr, ite])) == list(range(n))
    # exact round trip: pixel (c, r, col) of image g is data[g, c*1024 + r*32 + col]
    for ds in (tr, te):
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
    tr, te = both_splits("cifar10", root=str(root))
    ds = tr if g in tr.indices.tolist() else te
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


def _by_path(tr, te):
    """{relative file name: (3, S, S) uint8 numpy} over both splits."""
    out = {}
    for ds in (tr, te):
        for p, x in zip(ds.paths, ds.images):
            out[os.path.basename(p)] = x.numpy()
    return out


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

    tr, te = both_splits("folder", root=str(root), image_size=8)
    assert len(tr) + len(te) == 10 and len(te) == 2
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (3, 8, 8)
    assert tr.name == "folder8"
    got = _by_path(tr, te)
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
    assert [os.path.basename(p) for p in sorted(tr.paths + te.paths)] == sorted(got)


def test_folder_center_crop_and_resize(tmp_path):
    root = tmp_path / "f"
    img = np.zeros((8, 12, 3), np.uint8)
    img[:, 2:10] = _pattern(seed=5)
    img[:, :2] = img[:, 10:] = (0, 255, 0)
    save_png(root / "wide.png", img)
    tall = np.full((40, 20, 3), 50, np.uint8)
    tall[10:30] = 200
    save_png(root / "tall.png", tall)
    ds = load_dataset("folder", "train", image_size=8, root=str(root), test_fraction=0.0)
    got = {os.path.basename(p): x.numpy() for p, x in zip(ds.paths, ds.images)}
    assert np.array_equal(got["wide.png"], img[:, 2:10].transpose(2, 0, 1))
    # tall: the centre square (rows 10..29) is uniform 200; nothing outside it leaks in
    assert (got["tall.png"] == 200).all()
    big = load_dataset("folder", "train", image_size=32, root=str(root), test_fraction=0.0)
    assert big.images.shape == (2, 3, 32, 32)


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
    ds = load_dataset("celeba", "train", image_size=148, root=str(root), test_fraction=0.0)
    assert ds.name == "celeba148"
    assert np.array_equal(ds.images[0].numpy(), crop.transpose(2, 0, 1))
    small = load_dataset("celeba", "train", root=str(root), test_fraction=0.0)
    assert small.images.shape == (2, 3, 64, 64)  # default size 64
    # none of the green border leaks in
    assert torch.equal(small.images[1], torch.tensor([200, 10, 90], dtype=torch.uint8)[:, None, None].expand(3, 64, 64))
    # an image too small for the crop is an error naming the file
    save_png(root / "000003.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(DataError, match="000003.png.*too small"):
        load_dataset("celeba", "train", root=str(root))


def test_imagenette_uses_train_subfolder(tmp_path):
    root = tmp_path / "imagenette2-160"
    for i in range(4):
        save_png(root / "train" / "n01440764" / f"t{i}.png", _pattern(20, 30, seed=i))
    save_png(root / "val" / "n01440764" / "v0.png", _pattern(20, 30, seed=9))
    tr, te = both_splits("imagenette", root=str(root))
    assert len(tr) + len(te) == 4 and tr.images.shape[1:] == (3, 64, 64) and tr.name == "imagenette64"
    assert all("/train/" in p.replace(os.sep, "/") for p in tr.paths + te.paths)


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


def test_folder_cache_reuse_and_invalidation(tmp_path, _cache):
    root = tmp_path / "f"
    for i in range(3):
        save_png(root / f"{i}.png", _pattern(seed=i))
    before = data.BUILD_COUNTS["folder"]
    a = load_dataset("folder", "train", image_size=8, root=str(root), test_fraction=0.0)
    assert data.BUILD_COUNTS["folder"] == before + 1
    files = list(_cache.glob("folder8-*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = load_dataset("folder", "test", image_size=8, root=str(root), seed=5)
    c = load_dataset("folder", "train", image_size=8, root=str(root), seed=5)
    assert data.BUILD_COUNTS["folder"] == before + 1  # served from the cache
    assert files[0].stat().st_mtime_ns == mtime
    assert len(b) + len(c) == 3
    assert not list(_cache.glob(".tmp-*"))  # no temp file left behind
    # a new file invalidates the cache
    save_png(root / "3.png", _pattern(seed=3))
    d = load_dataset("folder", "train", image_size=8, root=str(root), test_fraction=0.0)
    assert len(d) == 4 and data.BUILD_COUNTS["folder"] == before + 2
    # changed content (and mtime) of an existing file invalidates it too
    new = _pattern(seed=42)
    save_png(root / "0.png", new)
    st = os.stat(root / "0.png")
    os.utime(root / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    e = load_dataset("folder", "train", image_size=8, root=str(root), test_fraction=0.0)
    assert np.array_equal(e.images[0].numpy(), new.transpose(2, 0, 1))
    assert not np.array_equal(a.images[0].numpy(), e.images[0].numpy())
    assert len(list(_cache.glob("folder8-*.npz"))) == 1  # stale cache files are removed
    # a corrupt cache file is ignored and rebuilt
    cache_file = next(_cache.glob("folder8-*.npz"))
    cache_file.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable dataset cache"):
        f = load_dataset("folder", "train", image_size=8, root=str(root), test_fraction=0.0)
    assert torch.equal(f.images, e.images)


def test_dataset_with_dataloader(tmp_path):
    root = tmp_path / "f"
    for i in range(5):
        save_png(root / f"{i}.png", _pattern(seed=i))
    ds = load_dataset("folder", "train", image_size=8, root=str(root), test_fraction=0.0)
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
    tr, te = both_splits("default", image_size=size, cache_dir=default_cache)
    assert tr.name == f"default{size}"
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (3, size, size)
    assert te.images.shape[1:] == (3, size, size)
    assert len(tr) >= 3000 and len(te) >= (300 if size == 32 else 100)
    assert tr.coords.dtype == torch.int64 and tr.coords.shape == (len(tr), 3)
    assert te.coords.shape == (len(te), 3)
    # every photo contributes to both splits
    n_photos = len(data.DEFAULT_SOURCES)
    assert set(tr.coords[:, 0].tolist()) == set(range(n_photos)) == set(te.coords[:, 0].tolist())
    # images are the patches their coordinates name
    photos = data.load_default_photos()
    for ds in (tr, te):
        for j in np.linspace(0, len(ds) - 1, 25).astype(int):
            k, r, c = ds.coords[j].tolist()
            assert np.array_equal(ds.images[j].numpy(), photos[k][r : r + size, c : c + size].transpose(2, 0, 1))
    # no test pixel is inside any training patch
    for k in range(n_photos):
        h, w = photos[k].shape[:2]
        covered = np.zeros((h, w), bool)
        for _, r, c in te.coords[te.coords[:, 0] == k].tolist():
            covered[r : r + size, c : c + size] = True
        s = np.pad(covered.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        trk = tr.coords[tr.coords[:, 0] == k].numpy()
        r, c = trk[:, 1], trk[:, 2]
        overlap = s[r + size, c + size] - s[r, c + size] - s[r + size, c] + s[r, c]
        assert (overlap == 0).all(), f"photo {k}: a training patch overlaps a test patch"
    # no duplicate patches within a split
    assert len({tuple(x) for x in tr.coords.tolist()}) == len(tr)
    info = data.default_dataset_info(size, cache_dir=default_cache)
    assert info["n_train"] == len(tr) and info["n_test"] == len(te)
    assert sum(p["n_train"] for p in info["photos"]) == len(tr)
    assert all(p["licence"] for p in info["photos"])


def test_default_cache_reuse_and_seed(default_cache, tmp_path):
    load_dataset("default", "train", image_size=32, cache_dir=default_cache)
    before = data.BUILD_COUNTS["default"]
    files = sorted(f for f in os.listdir(default_cache) if f.startswith("default32-"))
    mtimes = [os.stat(os.path.join(default_cache, f)).st_mtime_ns for f in files]
    a = load_dataset("default", "test", image_size=32, cache_dir=default_cache)
    assert data.BUILD_COUNTS["default"] == before
    assert [os.stat(os.path.join(default_cache, f)).st_mtime_ns for f in files] == mtimes
    # another seed draws other test tiles (a new cache entry)
    b = load_dataset("default", "test", image_size=32, cache_dir=str(tmp_path), seed=1)
    assert data.BUILD_COUNTS["default"] == before + 1
    assert a.coords.shape != b.coords.shape or not torch.equal(a.coords, b.coords)
    # the default size is 32, root is ignored
    c = load_dataset("default", "test", root="/does/not/matter", cache_dir=default_cache)
    assert torch.equal(c.images, a.images)


def test_default_bad_size():
    with pytest.raises(DataError, match="32, 64"):
        load_dataset("default", "train", image_size=48)


def test_default_sources_documented():
    for s in data.DEFAULT_SOURCES:
        assert {"name", "file", "licence", "source", "scale"} <= set(s)
        assert any(w in s["licence"] for w in ("Public domain", "CC0", "No known copyright"))


# --------------------------------------------------------------------------- #
# augmentation
# --------------------------------------------------------------------------- #


def _smooth_batch(b=64, size=32, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 3, 3, generator=g) * 255
    x = torch.nn.functional.interpolate(low, size=(size, width or size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def test_augment_shape_dtype_determinism():
    x = _smooth_batch()
    y1 = augment(x, torch.Generator().manual_seed(7))
    y2 = augment(x, torch.Generator().manual_seed(7))
    y3 = augment(x, torch.Generator().manual_seed(8))
    assert y1.shape == x.shape and y1.dtype == torch.uint8 and y1.device == x.device
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    # the generator state advances: two calls in a row differ
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(augment(x, g), augment(x, g))
    # content is preserved: small mean difference (after undoing the flip when it helps)
    diff = torch.minimum(
        (y1.float() - x.float()).abs().mean(dim=(1, 2, 3)), (y1.float() - x.flip(-1).float()).abs().mean(dim=(1, 2, 3))
    )
    other = (x.float() - x.roll(1, 0).float()).abs().mean(dim=(1, 2, 3))
    assert diff.mean() < 0.25 * other.mean() and diff.max() < 20


def test_augment_matches_opencv_reference():
    """The batched warp equals cv2.warpAffine with the documented map (also for non-square images)."""
    h, w = 32, 40
    x = _smooth_batch(b=12, size=h, width=w, seed=3)
    y = augment(x, torch.Generator().manual_seed(5))
    prm = data.random_affine_params(12, torch.Generator().manual_seed(5), "cpu")
    assert 0 < int(prm["flip"].sum()) < 12
    for i in range(12):
        img = x[i].permute(1, 2, 0).numpy()
        if prm["flip"][i]:
            img = img[:, ::-1]
        s = float(prm["scale"][i])
        c, sn = math.cos(float(prm["angle"][i])) / s, math.sin(float(prm["angle"][i])) / s
        tx, ty = float(prm["tx"][i]) * w, float(prm["ty"][i]) * h
        # destination pixel (col, row) -> source pixel, centres at integers
        m = np.array(
            [
                [c, -sn, c * (0.5 - w / 2) - sn * (0.5 - h / 2) + tx + w / 2 - 0.5],
                [sn, c, sn * (0.5 - w / 2) + c * (0.5 - h / 2) + ty + h / 2 - 0.5],
            ]
        )
        ref = cv2.warpAffine(
            np.ascontiguousarray(img).astype(np.float32), m, (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT,
        )
        d = np.abs(ref.round() - y[i].permute(1, 2, 0).numpy().astype(np.float32))
        assert d.max() <= 1 and d.mean() < 0.05


def test_augment_flip_only():
    x = _smooth_batch(b=64)
    y = augment(x, torch.Generator().manual_seed(0), max_translate=0.0, max_rotate_deg=0.0, scale_range=(1.0, 1.0))
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()
    assert 10 < int(flipped.sum()) < 54 and 10 < int(same.sum())
    assert torch.equal(augment(x, torch.Generator(), p_flip=0.0, max_translate=0.0, max_rotate_deg=0.0,
                               scale_range=(1.0, 1.0)), x)


def test_augment_identity_warp_is_exact_and_borders_not_black():
    x = _smooth_batch(b=8)
    # a (practically) identity warp through the bilinear path returns the input exactly
    y = augment(
        x, torch.Generator().manual_seed(1), p_flip=0.0, max_translate=1e-7, max_rotate_deg=1e-7, scale_range=(1.0, 1.0)
    )
    assert torch.equal(y, x)
    # constant images stay constant: reflection padding, no black borders
    c = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8)
    yc = augment(c, torch.Generator().manual_seed(2), max_translate=0.125, max_rotate_deg=10)
    assert torch.equal(yc, c)
    # nearest resampling only produces values present in the input image
    r = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    yn = augment(r, torch.Generator().manual_seed(4), mode="nearest")
    for i in range(4):
        assert set(yn[i].unique().tolist()) <= set(r[i].unique().tolist())


def test_augment_non_square_and_bad_input():
    x = torch.randint(0, 256, (3, 1, 16, 24), dtype=torch.uint8)
    assert augment(x, torch.Generator().manual_seed(0)).shape == (3, 1, 16, 24)
    assert augment(x[:0], torch.Generator()).shape == (0, 1, 16, 24)
    with pytest.raises(ValueError):
        augment(x.float(), torch.Generator())
    with pytest.raises(ValueError):
        augment(x[0], torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_cuda():
    x = _smooth_batch().cuda()
    y1 = augment(x, torch.Generator(device="cuda").manual_seed(3))
    y2 = augment(x, torch.Generator(device="cuda").manual_seed(3))
    assert y1.is_cuda and torch.equal(y1, y2)
    with pytest.raises(ValueError):
        augment(x, torch.Generator())
