"""Concept vectors and edits in u (selfvae.edit) and ``python -m selfvae.sample --mode edit``: the
vector is the difference of the two folders' mean posterior means, read the way the command reads
them; an edit of strength 0 is a reconstruction; clean errors for bad folders."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae import cli, modes, sample
from selfvae.edit import Concept, concept_vector, edit, load_concept

from test_codec import save_model, smooth_images, tiny_model, write_pngs

SIZE = 16
TILE, PAD = 128, 2  # sample grids enlarge 16x16 tiles to 128 pixels, 2-pixel borders


@pytest.fixture(scope="module")
def model():
    return tiny_model("downscale", 2, size=SIZE, steps=10)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two folders of PNGs: bright images (with the property) and dark ones (without), and the
    images written to each, uint8 (N, 3, 16, 16) in file order."""
    root = tmp_path_factory.mktemp("edit")
    base = smooth_images(11, SIZE, SIZE, seed=5).float()
    bright = (base[:6] * 0.4 + 150).round().clamp(0, 255).to(torch.uint8)
    dark = (base[6:] * 0.4).round().clamp(0, 255).to(torch.uint8)
    write_pngs(root / "bright", bright)
    write_pngs(root / "dark", dark)
    (root / "empty").mkdir()
    return root, bright, dark


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SELFVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def direct_means(model, images):
    """E q(u | y_K) per image, one image at a time, straight from the model's networks."""
    with torch.no_grad():
        return torch.cat([model.q_u(model.make_levels(images[i:i + 1])[-1]).mean for i in range(len(images))])


def test_the_vector_is_the_difference_of_the_folders_mean_posterior_means(model, folders):
    root, bright, dark = folders
    # the command's reading path gives back the images written (already at the model's size)
    read_bright, _ = cli.folder_images(str(root / "bright"), model, progress=False)
    read_dark, _ = cli.folder_images(str(root / "dark"), model, progress=False)
    assert torch.equal(read_bright, bright) and torch.equal(read_dark, dark)
    concept = concept_vector(model, read_bright, read_dark, batch_size=4)  # batches of 4, 2 and 4, 1
    expected = direct_means(model, bright).mean(0) - direct_means(model, dark).mean(0)
    assert concept.vector.shape == tuple(model.u_shape)
    assert torch.allclose(concept.vector, expected, atol=1e-5, rtol=1e-4)
    assert (concept.num_with, concept.num_without) == (6, 5)
    assert concept.norm == pytest.approx(float(expected.norm()), rel=1e-4)
    # the spread is the pooled within-folder standard deviation along the vector
    direction = (expected / expected.norm()).flatten()
    pb, pd = direct_means(model, bright).flatten(1) @ direction, direct_means(model, dark).flatten(1) @ direction
    pooled = math.sqrt((((pb - pb.mean()) ** 2).sum() + ((pd - pd.mean()) ** 2).sum()).item() / 9)
    assert concept.spread == pytest.approx(pooled, rel=1e-3)
    assert concept.separation == pytest.approx(concept.norm / pooled, rel=1e-3)
    # swapping the folders negates the vector and keeps its spread
    swapped = concept_vector(model, read_dark, read_bright)
    assert torch.allclose(swapped.vector, -concept.vector, atol=1e-6)
    assert swapped.spread == pytest.approx(concept.spread)
    with pytest.raises(ValueError, match="no images without"):
        concept_vector(model, read_bright, read_dark[:0])


def test_strength_zero_is_a_reconstruction(model, folders):
    _, bright, dark = folders
    concept = concept_vector(model, bright, dark)
    x = torch.cat([bright[:2], dark[:2]])
    kept = edit(model, x, concept, [0.0, 1.0], lower="keep")
    regenerated = edit(model, x, concept, [0.0, 1.0], lower="regenerate")
    for out in (kept, regenerated):
        assert out.dtype == torch.uint8 and out.shape == (2, 4, 3, SIZE, SIZE)
    # keep: u and every z at their posterior means, decoded by mode = reconstruct2
    assert torch.equal(kept[0], modes.reconstruct2(model, x, decode="mode", latents="mean").images)
    # regenerate at temperature 0: the z's at their prior means below the posterior mean of u = reconstruct1
    assert torch.equal(regenerated[0], modes.reconstruct1(model, x, decode="mode", temperature=0.0).images)


def test_strengths_move_the_images(model, folders):
    _, bright, dark = folders
    g = torch.Generator().manual_seed(0)
    concept = Concept(vector=3.0 * torch.randn(model.u_shape, generator=g), num_with=1, num_without=1,
                      spread=math.nan)
    x = dark[:3]
    for lower in ("regenerate", "keep"):
        out = edit(model, x, concept, [-2.0, 0.0, 2.0], lower=lower)
        assert out.shape == (3, 3, 3, SIZE, SIZE) and out.dtype == torch.uint8
        for a, b in ((0, 1), (1, 2), (0, 2)):
            assert not torch.equal(out[a], out[b]), (lower, a, b)
    # with a generator every strength sees the same draws: equal strengths, equal images
    drawn = edit(model, x, concept, [1.0, 1.0], lower="regenerate", decode="sample", temperature=1.0,
                 generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn[0], drawn[1])
    with pytest.raises(ValueError, match="lower must be one of"):
        edit(model, x, concept, [1.0], lower="replace")
    wrong = Concept(vector=torch.zeros(3), num_with=1, num_without=1, spread=math.nan)
    with pytest.raises(ValueError, match="concept vector has shape"):
        edit(model, x, wrong, [1.0])


# --------------------------------------------------------------------------- the command
def run(argv, capsys):
    code = sample.main(argv)
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return im.size


def test_command_writes_both_grids_and_the_concept(model, folders, tmp_path, capsys):
    root, bright, dark = folders
    ckpt = save_model(model, tmp_path / "k2.pt")
    inputs = write_pngs(tmp_path / "inputs", dark[:2])
    out = tmp_path / "out"
    code, printed, err = run([ckpt, "--mode", "edit", "--images", *inputs, "--with-folder", str(root / "bright"),
                              "--without-folder", str(root / "dark"), "--strengths", "-1", "0", "1.5",
                              "--no-progress", "--out", str(out)], capsys)
    assert code == 0, err
    notes = [line for line in printed if line.startswith("note:")]
    assert len(notes) == 1 and "6 images with the property and 5 without" in notes[0]
    assert [line for line in printed if not line.startswith("note:")] == [
        str(out / "edit_regenerate.png"), str(out / "edit_keep.png"), str(out / "concept.pt")]
    for name in ("edit_regenerate.png", "edit_keep.png"):
        width, height = png_size(out / name)
        grid_width, grid_height = 4 * (TILE + PAD) + PAD, 2 * (TILE + PAD) + PAD  # input + 3 strengths, 2 rows
        assert width > grid_width + 10 and height > grid_height + 10  # row labels left, column labels on top
        grid = np.asarray(Image.open(out / name))
        # the first column holds the inputs, enlarged by pixel repetition
        top, left = height - grid_height + PAD, width - grid_width + PAD
        first = np.asarray(Image.open(inputs[0])).repeat(TILE // SIZE, 0).repeat(TILE // SIZE, 1)
        assert np.array_equal(grid[top:top + TILE, left:left + TILE], first)
    concept, stored = load_concept(str(out / "concept.pt"))
    assert torch.allclose(concept.vector, concept_vector(model, bright, dark).vector, atol=1e-6)
    assert stored["with_folder"] == str(root / "bright") and stored["without_folder"] == str(root / "dark")
    assert (stored["num_with"], stored["num_without"]) == (6, 5)


def test_command_on_a_plain_vae(folders, tmp_path, capsys):
    root, _, dark = folders
    vae = save_model(tiny_model("downscale", 0, size=SIZE, steps=0), tmp_path / "vae.pt")
    code, printed, err = run([vae, "--mode", "edit", "--images", *write_pngs(tmp_path / "in", dark[:1]),
                              "--with-folder", str(root / "bright"), "--without-folder", str(root / "dark"),
                              "--no-progress", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert png_size(tmp_path / "out" / "edit_keep.png")[1] > 1 * (TILE + PAD) + PAD


def test_command_errors_are_one_line(model, folders, tmp_path, capsys):
    root, _, dark = folders
    ckpt = save_model(model, tmp_path / "k2.pt")
    inputs = write_pngs(tmp_path / "inputs", dark[:1])
    out = str(tmp_path / "out")

    def error(*argv):
        code, _, err = run([ckpt, "--out", out, "--images", *inputs, "--no-progress", *argv], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    bright, empty, missing = str(root / "bright"), str(root / "empty"), str(tmp_path / "missing")
    assert "--without-folder DIR" in error("--mode", "edit", "--with-folder", bright)
    assert f"--without-folder {missing}: no such folder" in error("--mode", "edit", "--with-folder", bright,
                                                                  "--without-folder", missing)
    assert "is a file, not a folder" in error("--mode", "edit", "--with-folder", inputs[0],
                                              "--without-folder", bright)
    message = error("--mode", "edit", "--with-folder", bright, "--without-folder", empty)
    assert message.startswith("error: --without-folder:") and "no image files" in message
    assert "--strengths applies to --mode edit only, not reconstruct2" in error("--mode", "reconstruct2",
                                                                                "--strengths", "1")
    assert "--with-folder applies to --mode edit only" in error("--mode", "interpolate", "--with-folder", bright)
