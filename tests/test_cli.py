"""The shared command-line layer: argument types refuse bad values, devices and output paths are
checked up front, and user errors become one line with exit status 2."""
import argparse

import pytest
import torch

from selfvae import cli
from selfvae.checkpoint import CheckpointError


@pytest.mark.parametrize("kind,text", [
    (cli.positive_int, "0"), (cli.positive_int, "-3"), (cli.positive_int, "2.5"), (cli.nonnegative_int, "-1"),
    (cli.positive_float, "nan"), (cli.positive_float, "inf"), (cli.positive_float, "0"),
    (cli.nonnegative_float, "-0.1"), (cli.open_fraction, "0"), (cli.open_fraction, "1"),
])
def test_argument_types_refuse_bad_values(kind, text):
    with pytest.raises(argparse.ArgumentTypeError):
        kind(text)


def test_argument_types_accept_good_values():
    assert cli.positive_int("3") == 3 and cli.nonnegative_int("0") == 0
    assert cli.positive_float("1e-3") == 1e-3 and cli.open_fraction("0.05") == 0.05


def test_devices_are_checked():
    assert cli.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(cli.UserError, match="--device"):
        cli.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(cli.UserError, match="CUDA is not available"):
            cli.resolve_device("cuda")


def test_output_paths_are_checked(tmp_path):
    (tmp_path / "file").write_text("x")
    assert cli.check_output_folder(str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")
    with pytest.raises(cli.UserError, match="is a file, not a folder"):
        cli.check_output_folder(str(tmp_path / "file"))
    with pytest.raises(cli.UserError, match="is a folder, not a file"):
        cli.check_output_file(str(tmp_path), "--json")
    with pytest.raises(cli.UserError, match="is a file, not a folder"):
        cli.check_output_file(str(tmp_path / "file" / "x.json"), "--json")


def test_user_errors_are_one_line_with_status_2(capsys):
    def failing():
        raise CheckpointError("checkpoint 'x.pt' is corrupt\nor truncated")

    assert cli.run(failing) == 2
    assert capsys.readouterr().err == "error: checkpoint 'x.pt' is corrupt or truncated\n"
    assert cli.run(lambda: None) == 0

    def bug():
        raise ZeroDivisionError("a bug keeps its traceback")

    with pytest.raises(ZeroDivisionError):
        cli.run(bug)
