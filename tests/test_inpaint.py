"""Inpainting (selfvae.inpaint, ``python -m selfvae.sample --mode inpaint``): the known pixels come back
exactly and nothing of the hole is read, the level masks are what the transforms depend on, the same
seed gives the same fill, masks are fitted without letting hole content through, and the command
writes its grid and ends bad masks with one error line."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfvae import sample
from selfvae.inpaint import classical_inpaint, inpaint, level_masks, read_mask, standard_masks
from transforms.imageio import center_crop_resize

from test_model import tiny
from test_sample import check_grid, make_checkpoint, write_png

MODELS = [("downscale", 2), ("bits:3", 1), ("downscale", 0)]
SIZE = 16


@pytest.fixture(scope="module")
def models():
    """Tiny 16x16 models (initialised, untrained: the properties hold for any weights) and 4 images."""
    return {chain: tiny(*chain) for chain in MODELS}


def four_masks(seed=0):
    """bool (4, 1, 16, 16): the three standard masks and a random scatter of pixels."""
    masks = standard_masks(SIZE, SIZE, seed=seed)
    scatter = torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) < 0.3
    return torch.stack([masks["centre"], masks["strokes"], masks["half"], scatter])


# chain, decode of the last sweep, top level redrawn from u
CASES = [(("downscale", 2), "mode", False), (("downscale", 2), "sample", True), (("bits:3", 1), "mode", True),
         (("bits:3", 1), "sample", False), (("downscale", 0), "mode", False)]


@pytest.mark.parametrize("chain,decode,from_u", CASES, ids=[f"{t}-K{k}-{d}{'-u' * u}" for (t, k), d, u in CASES])
def test_known_pixels_come_back_exactly_and_the_hole_is_not_read(models, chain, decode, from_u):
    model, x = models[chain]
    missing = four_masks()

    def fill(images):
        return inpaint(model, images, missing, iterations=2, decode=decode, from_u=from_u,
                       generator=torch.Generator().manual_seed(0))

    result = fill(x)
    out, hole = result.images, missing.expand_as(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[~hole], x[~hole])
    assert len(result.sweeps) == 2 and torch.equal(result.sweeps[-1], out)
    # every produced level is valid, and equal to the input's level where the hole does not reach
    truth = model.make_levels(x)
    for level, mask, true, spec in zip(result.levels, result.masks, truth, model.specs):
        assert level.dtype == torch.uint8 and tuple(level.shape[1:]) == spec.shape
        assert int(level.max()) < spec.num_values
        assert mask.any() and torch.equal(level[~mask], true[~mask])
    # the model filled the hole: not the initial Telea fill left in place
    assert not torch.equal(out[hole], classical_inpaint(x, missing)[hole])
    # what x holds in the hole is never read: other content there, the same result
    scrambled = torch.where(hole, torch.randint(0, 256, x.shape, dtype=torch.uint8), x)
    assert torch.equal(fill(scrambled).images, out)


def test_nothing_missing_gives_the_input_back(models):
    model, x = models[("downscale", 2)]
    result = inpaint(model, x, torch.zeros(SIZE, SIZE, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.images, x) and result.sweeps == []
    assert all(torch.equal(a, b) for a, b in zip(result.levels, model.make_levels(x)))


def test_the_same_seed_gives_the_same_fill(models):
    model, x = models[("downscale", 2)]
    missing = standard_masks(SIZE, SIZE)["centre"]

    def fill(seed):
        return inpaint(model, x, missing, iterations=2, decode="sample", init="mean",
                       generator=torch.Generator().manual_seed(seed)).images

    first = fill(0)
    assert torch.equal(fill(0), first)
    assert not torch.equal(fill(1), first)


def test_level_masks_are_what_the_transforms_depend_on(models):
    missing = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) < 0.08
    # bicubic x1/2 reads a 4x4 block of source pixels: a max-pool, kernel 4, stride 2, padding 1
    model = models[("downscale", 2)][0]
    masks = level_masks(model, missing)
    expected = missing.float()
    assert torch.equal(masks[0], missing.expand(-1, 3, -1, -1))
    for k in (1, 2):
        expected = F.max_pool2d(expected, kernel_size=4, stride=2, padding=1)
        assert masks[k].shape == (4, 3) + model.specs[k].shape[1:]
        assert torch.equal(masks[k], expected.bool().expand(-1, 3, -1, -1)), k
    # bit reduction is per pixel: the same mask
    masks = level_masks(models[("bits:3", 1)][0], missing[:, 0])
    assert all(torch.equal(m, missing.expand(-1, 3, -1, -1)) for m in masks)


def test_standard_masks():
    masks = standard_masks(32, 32, seed=0)
    assert set(masks) == {"centre", "strokes", "half"}
    assert all(m.dtype == torch.bool and m.shape == (1, 32, 32) for m in masks.values())
    assert int(masks["centre"].sum()) == 16 * 16 and bool(masks["centre"][0, 8:24, 8:24].all())
    assert bool(masks["half"][0, :, 16:].all()) and not masks["half"][0, :, :16].any()
    assert 0.05 < masks["strokes"].float().mean() < 0.6
    assert torch.equal(standard_masks(32, 32, seed=0)["strokes"], masks["strokes"])
    assert not torch.equal(standard_masks(32, 32, seed=1)["strokes"], masks["strokes"])


def test_a_mask_at_another_size_keeps_every_pixel_the_resize_mixes_hole_content_into(tmp_path):
    hole = np.zeros((40, 30), dtype=bool)
    hole[20, 3:27] = True  # a one-pixel line: a nearest-neighbour resize could drop it
    hole[5:9, 10:14] = True
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    mask, file_size = read_mask(str(tmp_path / "mask.png"), SIZE)
    assert file_size == (40, 30) and mask.dtype == torch.bool and mask.shape == (1, SIZE, SIZE)
    assert 0 < int(mask.sum()) < SIZE * SIZE
    # an image resized as the images are: outside the fitted mask it does not depend on the hole
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 40, 30), dtype=np.uint8)
    for fill in (0, 255):
        other = np.where(hole[None], np.uint8(fill), image)
        differs = center_crop_resize(image, SIZE) != center_crop_resize(other, SIZE)
        assert not differs[:, ~mask[0].numpy()].any()


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inpaint")
    make_checkpoint(root / "k2.pt", "downscale", 2, folder=root / "images", steps=0)
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SELFVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run(argv, capsys):
    code = sample.main(argv)
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def write_mask(path, hole):
    Image.fromarray(np.asarray(hole, dtype=np.uint8) * 255).save(path)
    return str(path)


def test_the_command_writes_the_grid_and_keeps_the_known_pixels(root, tmp_path, capsys):
    images = [write_png(tmp_path / f"{name}.png", SIZE, SIZE, seed=i) for i, name in enumerate("ab")]
    masks = standard_masks(SIZE, SIZE)
    mask_files = [write_mask(tmp_path / f"m{i}.png", masks[name][0]) for i, name in enumerate(("centre", "half"))]
    out = tmp_path / "out"
    code, printed, err = run([str(root / "k2.pt"), "--mode", "inpaint", "--images", *images, "--mask", *mask_files,
                              "--iterations", "2", "--out", str(out)], capsys)
    assert code == 0, err
    assert printed == [str(out / n) for n in ("inpaint.png", "inpaint_00_a.png", "inpaint_01_b.png")]
    check_grid(out / "inpaint.png", 5, 2, labelled=True)  # input with hole, mask, ours, Telea, original
    for image, name, hole in zip(images, ("a", "b"), (masks["centre"][0], masks["half"][0])):
        original = np.asarray(Image.open(image))
        filled = np.asarray(Image.open(out / f"inpaint_{'00' if name == 'a' else '01'}_{name}.png"))
        known = ~hole.numpy()
        assert np.array_equal(filled[known], original[known])
    # on test images the centred square is the default mask
    code, printed, err = run([str(root / "k2.pt"), "--mode", "inpaint", "--num", "3", "--iterations", "1",
                              "--out", str(tmp_path / "test")], capsys)
    assert code == 0, err
    assert printed == [str(tmp_path / "test" / "inpaint.png")]
    check_grid(tmp_path / "test" / "inpaint.png", 5, 3, labelled=True)


def test_bad_masks_end_with_one_error_line(root, tmp_path, capsys):
    ckpt, out = str(root / "k2.pt"), str(tmp_path / "out")
    images = [write_png(tmp_path / f"{i}.png", SIZE, SIZE, seed=i) for i in range(3)]
    good = write_mask(tmp_path / "good.png", standard_masks(SIZE, SIZE)["centre"][0])

    def error(*argv):
        code, _, err = run([ckpt, "--out", out, *argv], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    assert "needs --mask" in error("--mode", "inpaint", "--images", *images)
    assert "2 masks for 3 images" in error("--mode", "inpaint", "--images", *images, "--mask", good, good)
    empty = write_mask(tmp_path / "empty.png", np.zeros((SIZE, SIZE)))
    assert "empty.png: no pixel to fill" in error("--mode", "inpaint", "--images", images[0], "--mask", empty)
    full = write_mask(tmp_path / "full.png", np.ones((24, 24)))
    message = error("--mode", "inpaint", "--images", images[0], "--mask", full)
    assert "every pixel is to be filled once fitted to the model's 16x16" in message and "inverted" in message
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert f"--mask {broken}: cannot decode image" in error("--mode", "inpaint", "--images", images[0],
                                                           "--mask", str(broken))
    assert "--mask" in error("--mode", "inpaint", "--images", images[0], "--mask", str(tmp_path / "none.png"))
    assert "--mask applies to --mode inpaint only" in error("--mode", "reconstruct1", "--mask", good)
    assert "--iterations applies to --mode inpaint only" in error("--mode", "generate", "--iterations", "3")
