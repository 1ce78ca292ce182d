"""Pictures for people: grids enlarged by pixel repetition (no pixel invented), thin borders, row and column labels."""
import numpy as np
import pytest
import torch
from PIL import Image

from selfvae.images import BORDER, display_scale, make_grid, save_grid, save_rows


def batch(n, size=32, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def test_small_tiles_are_enlarged_by_pixel_repetition():
    assert display_scale(32, 32) == 4 and display_scale(16, 16) == 8 and display_scale(200, 100) == 1
    x = batch(3)
    grid = make_grid(x, nrow=3)
    tile = 32 * 4
    assert grid.shape == (3, tile + 2 * BORDER, 3 * (tile + BORDER) + BORDER)
    second = grid[:, BORDER:BORDER + tile, BORDER + tile + BORDER:BORDER + 2 * tile + BORDER]
    assert torch.equal(second, x[1].repeat_interleave(4, 1).repeat_interleave(4, 2))
    # the border is a thin line between tiles, not image content
    assert (grid[:, :BORDER] == grid[0, 0, 0]).all()


def test_gray_tiles_become_gray_rgb_and_bad_input_is_named():
    gray = batch(2, channels=1)
    grid = make_grid(gray, scale=1)
    assert torch.equal(grid[0], grid[1]) and torch.equal(grid[1], grid[2])
    with pytest.raises(ValueError, match="uint8"):
        make_grid(gray.float())


def test_rows_carry_their_labels(tmp_path):
    rows = [batch(4, seed=s) for s in range(3)]
    labelled = save_rows(rows, str(tmp_path / "labelled.png"), labels=["inputs", "reconstruction", "k=1"])
    plain = save_rows(rows, str(tmp_path / "plain.png"))
    a, b = np.asarray(Image.open(labelled)), np.asarray(Image.open(plain))
    assert a.shape[0] == b.shape[0] and a.shape[1] > b.shape[1]
    # the grid itself is unchanged, the label column is on its left and holds dark text pixels
    assert np.array_equal(a[:, -b.shape[1]:], b)
    column = a[:, :a.shape[1] - b.shape[1]]
    tile = 32 * 4 + BORDER
    for r in range(3):  # every row has its own label
        assert (column[r * tile:(r + 1) * tile] < 100).any(), r
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        save_rows(rows, str(tmp_path / "x.png"), labels=["a", "b"])


def test_columns_carry_their_labels(tmp_path):
    rows = [batch(4, seed=s) for s in range(2)]
    plain = np.asarray(Image.open(save_rows(rows, str(tmp_path / "plain.png"), labels=["a", "b"])))
    both = np.asarray(Image.open(save_rows(rows, str(tmp_path / "both.png"), labels=["a", "b"],
                                           column_labels=["input", "s = -1", "s = 0", "s = 1"])))
    assert both.shape[1] == plain.shape[1] and both.shape[0] > plain.shape[0]
    # the labelled grid is unchanged below a strip that holds dark text over every column
    assert np.array_equal(both[-plain.shape[0]:], plain)
    strip = both[:both.shape[0] - plain.shape[0]]
    tile = 32 * 4 + BORDER
    left = plain.shape[1] - 4 * tile - BORDER
    for c in range(4):
        assert (strip[:, left + c * tile:left + (c + 1) * tile] < 100).any(), c
    with pytest.raises(ValueError, match="3 column labels for 4 columns"):
        save_rows(rows, str(tmp_path / "x.png"), column_labels=["a", "b", "c"])


def test_png_is_written_atomically_with_no_temporary_left(tmp_path):
    path = save_grid(batch(2), str(tmp_path / "g.png"))
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
