"""The codec: exact lossless round trips (decoded in another process), previews, lossy operating
points, the file format's checks, and >= 1,000 damaged files that each give a clear error."""
import copy
import math
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae import codec
from selfvae.checkpoint import save_checkpoint
from selfvae.codec import ans, bitsback, container, tiling
from selfvae.config import make_config
from selfvae.evaluation import elbo
from selfvae.model import build_model
from transforms.imageio import read_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(width=8, growth=4, dense_layers=1, blocks=1, components=3, flow_couplings=2, flow_hidden=8,
            latent_channels=4, latent_size=4)


def smooth_images(n, height, width, channels=3, seed=0):
    """uint8 (n, C, H, W): coarse random colours, bilinearly enlarged, light noise (photo-like)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (n, channels, max(2, height // 4), max(2, width // 4)), generator=g).float()
    up = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (up + torch.randint(-6, 7, up.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def tiny_model(transform="downscale", levels=2, size=16, steps=30, seed=0, **overrides):
    """A tiny model, briefly trained on smooth images so that its latents and likelihoods are not at
    their initialisation."""
    torch.manual_seed(seed)
    model = build_model(make_config("small", transform, levels, image_size=size, **{**TINY, **overrides}))
    data = smooth_images(64, size, size, seed=seed + 1)
    model.initialize(data[:16])
    opt = torch.optim.Adamax(model.parameters(), lr=3e-3)
    for step in range(steps):
        loss = model.bits_per_dim(model(data[(step * 16) % 64:(step * 16) % 64 + 16]))["bpd"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def save_model(model, path):
    save_checkpoint({"config": model.config.to_dict(), "model": model.state_dict()}, str(path))
    return str(path)


def run(module, *argv):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)


def write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        array = image.numpy() if isinstance(image, torch.Tensor) else image
        hwc = array.transpose(1, 2, 0)
        path = folder / f"img{i:04d}.png"
        Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).save(path)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------- probability tables
def test_channel_pmfs_multiply_to_the_joint_and_sum_to_one():
    g = torch.Generator().manual_seed(0)
    from selfvae.distributions import DiscretizedLogisticMixture as DLM
    params = torch.randn(2, DLM.num_params(3, 4), 3, 3, generator=g, dtype=torch.float64)
    dist = DLM(params, channels=3, num_values=16, components=4)
    value = torch.randint(0, 16, (2, 3, 3, 3), generator=g)
    joint = torch.zeros(2, 3, 3, dtype=torch.float64)
    for c in range(3):
        pmf = dist.channel_pmf(c, value[:, :c] if c else None)
        assert torch.allclose(pmf.sum(-1), torch.ones(2, 3, 3, dtype=torch.float64), atol=1e-12)
        joint += torch.log(pmf.gather(-1, value[:, c, ..., None]).squeeze(-1))
    assert torch.allclose(joint, dist.log_prob_pixels(value), atol=1e-9)


def test_integer_tables_are_exact_and_never_zero():
    pmf = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [1e-30, 0.5, 0.5]], dtype=torch.float64)
    table = ans.integer_table(pmf)
    assert (table >= 1).all() and (table.sum(1) == 2 ** ans.PRECISION).all()
    assert np.array_equal(table, np.floor(table))


# --------------------------------------------------------------------------- round trips
MODELS = [("downscale", 0), ("downscale", 1), ("downscale", 3), ("bits:3", 1), ("sketch", 1), ("phased", 2),
          ("subsample", 2)]


def phased_model(steps=20, size=16, transform="downscale"):
    """``transform:2`` with ``phases=4``; its phase corrections pushed well away from zero (a short run
    barely moves them) so that every phase's mixture really depends on the phases before it."""
    model = tiny_model(transform, 2, size=size, steps=steps, phases=4)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for decoder in [model.p_top, *model.p_y]:
            for net in decoder.refiner.nets:
                net[-1].weight.copy_(0.03 * torch.randn(net[-1].weight.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def models():
    made = {(t, k): tiny_model(t, k, steps=10 + 5 * k) for t, k in MODELS if t not in ("phased", "subsample")}
    made[("phased", 2)] = phased_model()
    made[("subsample", 2)] = phased_model(transform="subsample")
    return made


@pytest.mark.parametrize("transform,levels", MODELS, ids=[f"{t}-K{k}" for t, k in MODELS])
def test_lossless_round_trip_of_odd_sized_photos_in_another_process(models, tmp_path, transform, levels):
    model = models[(transform, levels)]
    checkpoint = save_model(model, tmp_path / "model.pt")
    images = [smooth_images(1, h, w, seed=i)[0] for i, (h, w) in enumerate([(37, 23), (16, 16), (50, 41), (9, 70)])]
    gray = smooth_images(1, 21, 33, channels=1, seed=9)[0]
    paths = write_pngs(tmp_path / "in", images + [gray])
    packed = tmp_path / "images.svae"
    made = run("selfvae.compress", *paths, "-o", packed, "--model", checkpoint, "--no-store")
    assert made.returncode == 0, made.stderr
    assert container.read(packed.read_bytes())[0].mode == "lossless"
    back = run("selfvae.decompress", packed, "-o", tmp_path / "out", "--model", checkpoint)
    assert back.returncode == 0, back.stderr
    for path in paths:
        original = read_image(path, channels=None)
        decoded = read_image(str(tmp_path / "out" / os.path.basename(path)), channels=None)
        assert decoded.shape == original.shape and np.array_equal(decoded, original), path


def test_a_thousand_patches_round_trip_and_cost_what_the_elbo_says(tmp_path):
    """Exact on every one of 1,000 patches, decoded in a separate process; the file is within a few
    per cent of the negative ELBO (tiny model: the latents' grid and initial bits weigh more here
    than in the benchmark's model)."""
    model = tiny_model("downscale", 1, size=8, steps=40)
    patches = smooth_images(1000, 8, 8, seed=5)
    data = codec.encode(model, patches)
    (tmp_path / "patches.svae").write_bytes(data)
    np.save(tmp_path / "patches.npy", patches.numpy())
    checkpoint = save_model(model, tmp_path / "model.pt")
    script = ("import sys, numpy as np; from selfvae import codec; from selfvae.checkpoint import load_model;"
              "m, _ = load_model(sys.argv[1]); out = codec.decode(m, open(sys.argv[2], 'rb').read());"
              "ref = np.load(sys.argv[3]); assert len(out.images) == len(ref);"
              "bad = [i for i, (a, b) in enumerate(zip(out.images, ref)) if not np.array_equal(a, b)];"
              "print('mismatches', len(bad))")
    proc = subprocess.run([sys.executable, "-c", script, checkpoint, str(tmp_path / "patches.svae"),
                           str(tmp_path / "patches.npy")], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0 and "mismatches 0" in proc.stdout, proc.stderr + proc.stdout
    header, words, _ = container.read(data)
    stream_bpd = 32 * len(words) / patches.numel()
    model_bpd = elbo(model, patches, progress=False)["elbo_bpd"]
    assert 0.99 * model_bpd < stream_bpd < 1.03 * model_bpd, (stream_bpd, model_bpd)
    # the rest of the file: 6 bytes per (unnamed) image and a fixed part
    rest = len(data) - 4 * len(words)
    assert 6 * 1000 <= rest < 6 * 1000 + 128, rest


def test_phased_levels_round_trip_and_cost_what_the_elbo_says():
    """With ``phases=4`` every level is pushed phase by phase under mixtures conditioned on the true
    earlier phases and popped in the reverse order: exact, and the stream tracks the ELBO (whose x
    and y terms are the same phase-by-phase likelihoods, evaluated at once)."""
    round_trip_tracking_the_elbo(phased_model(steps=40, size=8), smooth_images(100, 8, 8, seed=6))


def round_trip_tracking_the_elbo(model, patches):
    """Encode and decode ``patches`` exactly with either latent code; the bits-back stream is within
    -1 %..+4 % of the -ELBO, the prior-mean stream within 0..+1 % of the levels' negative log-likelihood
    under the prior-mean latents. Returns the bits-back stream's words."""
    out = {}
    for latents in ("bits-back", "prior-mean"):
        data = codec.encode(model, patches, store_fallback=False, latents=latents)
        decoded = codec.decode(model, data)
        assert all(np.array_equal(a, b.numpy()) for a, b in zip(decoded.images, patches))
        header, out[latents], _ = container.read(data)
        assert header.latents == latents
    dims = patches.numel()
    model_bpd = elbo(model, patches, progress=False)["elbo_bpd"]
    assert 0.99 * model_bpd < 32 * len(out["bits-back"]) / dims < 1.04 * model_bpd, (len(out["bits-back"]), model_bpd)
    nats = -bitsback.prior_mean_log_likelihood(model, bitsback.levels_from(model, patches, 0), 0).sum().item()
    prior_mean_bpd = nats / (dims * np.log(2))
    assert prior_mean_bpd <= 32 * len(out["prior-mean"]) / dims < 1.01 * prior_mean_bpd + 64 / dims
    return out["bits-back"]


def test_a_level_copied_from_the_one_above_is_not_sent_and_the_file_costs_what_the_elbo_says():
    """``subsample`` keeps the first 2x2 phase of the level below: the coder sends only the other three
    phases of each phased level, and the stream still tracks the ELBO, whose x and y terms give those
    pixels zero bits. A level whose first phase disagrees with the level above cannot be pushed."""
    model = phased_model(steps=40, size=8, transform="subsample")
    assert all(decoder.given_first for decoder in model.p_y)
    patches = smooth_images(100, 8, 8, seed=6)
    words = round_trip_tracking_the_elbo(model, patches)
    # the same model made to code all four phases sends more
    for decoder in model.p_y:
        decoder.given_first = False
    assert len(container.read(codec.encode(model, patches, store_fallback=False, latents="bits-back"))[1]) > len(words)
    for decoder in model.p_y:
        decoder.given_first = True
    inference = model.infer(patches[:4])
    likelihood = model.p_y[0](inference.decoder_conditions[0], inference.q_z[0].mean)
    wrong = patches[:4].clone()
    wrong[:, :, 0, 0] ^= 1
    with pytest.raises(ValueError, match="first phase differs"):
        bitsback.push_level(ans.Stack(), likelihood, wrong)


@pytest.mark.parametrize("latents", ["bits-back", "prior-mean"])
def test_previews_are_the_exact_upper_levels_and_need_fewer_bytes(models, latents):
    model = models[("downscale", 3)]
    images = smooth_images(6, 32, 48, seed=3)
    data = codec.encode(model, images, store_fallback=False, latents=latents)
    header, words, _ = container.read(data)
    for k in range(3, 0, -1):
        preview = codec.decode(model, data, up_to_level=k)
        assert preview.level == k and preview.images[0].shape == (3, 32 >> k, 48 >> k)
        for got, image in zip(preview.images, images):
            # each 16x16 tile's own y_k, put back in place
            tiles = model.make_levels(tiling.to_tiles(image.numpy(), 16, 3))[k]
            assert np.array_equal(got, tiling.from_tiles(tiles, 32, 48, 16))
    words_needed = header.preview_words
    assert words_needed[3] <= words_needed[2] <= words_needed[1] <= words_needed[0] == len(words)
    assert words_needed[3] < len(words)


def test_gray_images_send_one_channel_and_round_trip_beside_rgb(models):
    """A gray image's tiles send channel 0 alone at every level (the decoder copies it): fewer bytes
    than the same pixels as an RGB image, exact in a file that mixes gray and RGB tiles in one batch,
    lossless and lossy."""
    model = models[("downscale", 3)]
    gray = smooth_images(1, 40, 35, channels=1, seed=11)[0].numpy()
    rgb = smooth_images(1, 20, 30, seed=12)[0].numpy()
    as_rgb = np.repeat(gray, 3, axis=0)
    one, three = (codec.encode(model, [im], store_fallback=False) for im in (gray, as_rgb))
    assert container.read(one)[0].gray and not container.read(three)[0].gray
    assert len(one) < 0.7 * len(three)
    mixed = codec.encode(model, [rgb, gray, as_rgb], store_fallback=False)
    out = codec.decode(model, mixed)
    assert [im.shape for im in out.images] == [rgb.shape, gray.shape, as_rgb.shape]
    for got, want in zip(out.images, [rgb, gray, as_rgb]):
        assert np.array_equal(got, want)
    lossy = codec.decode(model, codec.encode(model, [gray, rgb], level=2, with_z=True))
    assert lossy.images[0].shape == gray.shape and lossy.images[1].shape == rgb.shape


def test_images_the_model_cannot_code_are_stored_never_larger_than_raw(models):
    """Uniform noise costs this smooth-image model more than 8 bits per value: the file stores the
    pixels (exact, previews computed by the chain, damage detected)."""
    model = models[("downscale", 3)]
    noise = [np.random.default_rng(s).integers(0, 256, shape, dtype=np.uint8)
             for s, shape in enumerate([(3, 21, 30), (1, 16, 17)])]
    data = codec.encode(model, noise, ["a", "b"])
    header, words, _ = container.read(data)
    assert header.mode == "stored" and len(data) <= sum(im.size for im in noise) + 200
    out = codec.decode(model, data)
    assert out.names == ["a", "b"] and all(np.array_equal(a, b) for a, b in zip(out.images, noise))
    preview = codec.decode(model, data, up_to_level=2)
    tiles = model.make_levels(tiling.to_tiles(noise[0], 16, 3))[2]
    assert np.array_equal(preview.images[0], tiling.from_tiles(tiles, 21, 30, 16))
    assert len(codec.encode(model, noise, ["a", "b"], store_fallback=False)) > len(data)
    # a payload that disagrees with the images announced: rebuilt with valid CRCs, still refused
    short = container.write(header, words[:-1], np.zeros(0, np.uint32))
    with pytest.raises(codec.CodecError, match="stored file"):
        codec.decode(model, short)


def test_prior_mean_latents_cost_no_initial_bits_and_auto_keeps_the_shorter_code(models, monkeypatch):
    """Bits-back pays initial bits for its first pops (in level-by-level order every tile's z_1 is popped
    before any is pushed back); a code with the latents at their prior means pays none: it needs no
    seed, costs the levels' likelihood under those latents (within 1 %), and decodes exactly, lossless
    and lossy. ``auto`` writes a file no longer than the prior-mean one, and when it also tries
    bits-back (forced here by the margin), no longer than either."""
    model = models[("downscale", 3)]
    image = [smooth_images(1, 24, 40, seed=21)[0].numpy()]
    files = {latents: codec.encode(model, image, store_fallback=False, latents=latents)
             for latents in ("bits-back", "prior-mean")}
    tiles = tiling.to_tiles(image[0], 16, 3)
    nll_bits = -bitsback.prior_mean_log_likelihood(model, bitsback.levels_from(model, tiles, 0), 0).sum().item() / np.log(2)
    stream_bits = 32 * len(container.read(files["prior-mean"])[1])
    assert nll_bits <= stream_bits < 1.01 * nll_bits + 64
    header = container.read(files["prior-mean"])[0]
    assert header.latents == "prior-mean" and header.seed_words == 0 and header.kept_seed_words == 0
    assert container.read(files["bits-back"])[0].seed_words > 0
    for data in files.values():
        assert np.array_equal(codec.decode(model, data).images[0], image[0])
    for level in (1, 3):
        lossy = codec.encode(model, image, level=level, latents="prior-mean")
        assert container.read(lossy)[0].latents == "prior-mean"
        decoded = codec.decode(model, lossy).images[0]
        assert decoded.shape == image[0].shape
        preview = codec.decode(model, lossy, up_to_level=level).images[0]
        tiles = model.make_levels(tiling.to_tiles(image[0], 16, 3))[level]
        assert np.array_equal(preview, tiling.from_tiles(tiles, 24, 40, 16))
    shortest = min(len(f) for f in files.values())
    assert len(codec.encode(model, image, store_fallback=False)) <= len(files["prior-mean"])
    monkeypatch.setattr(codec, "BITS_BACK_MARGIN", -1.0)  # always try bits-back as well
    assert len(codec.encode(model, image, store_fallback=False)) == shortest
    with pytest.raises(codec.CodecError, match="latents must be one of"):
        codec.encode(model, image, latents="posterior")


def test_version_2_files_still_decode_and_cannot_claim_prior_mean_latents(models):
    """Files written before the prior-mean flag (format version 2: always bits-back) decode as before;
    a prior-mean file cannot be written as version 2, and a version-2 file with flag bit 3 is refused."""
    model = models[("subsample", 2)]
    images = [smooth_images(1, 20, 20, seed=s)[0].numpy() for s in range(2)]
    header, stream, extra = container.read(codec.encode(model, images, store_fallback=False, latents="bits-back"))
    old = container.write(header, stream, extra, version=2)
    assert old[4] == 2
    assert all(np.array_equal(a, b) for a, b in zip(codec.decode(model, old).images, images))
    header, stream, extra = container.read(codec.encode(model, images, store_fallback=False, latents="prior-mean"))
    with pytest.raises(codec.CodecError, match="version 3 or later"):
        container.write(header, stream, extra, version=2)
    header.latents, header.windows, header.window_mixture = "bits-back", False, False
    forged = bytearray(container.write(header, stream, extra, version=2))
    forged[7] |= 8
    with pytest.raises(codec.CodecError, match="unknown flags"):
        container.read(_with_header_crc(bytes(forged), _header_end(bytes(forged))))


def _header_end(data: bytes) -> int:
    """Where a file's header CRC starts (the header's length)."""
    header, stream, extra = container.read(data)
    return len(data) - 4 * (len(stream) + len(extra)) - 8


# --------------------------------------------------------------------------- overlapping windows
def _owning_slot(n, tile):
    """Independent of the codec's rule: each x coordinate's window shift (0 or tile/2), the window whose
    central half holds it; within tile/4 of either end, the window at that end."""
    out = []
    for r in range(n):
        if r < tile // 4 or r >= n - tile // 4:
            out.append(0)
        else:
            out.append(((r - tile // 4) // (tile // 2)) % 2)
    return torch.tensor(out)


def _mixture_log_weights(n, tile, level):
    """Independent of the codec's rule: for each coordinate of level ``level`` (``n`` of them) and each of the
    two window shifts (0, tile/2): whether a window covers it, and its distance in x pixels to that
    window's nearer edge."""
    s, t = 2 ** level, tile // 2 ** level
    out = []
    for shift in (0, tile // 2):
        starts = list(range(shift // s, n - t + 1, t))
        covered, distance = [], []
        for r in range(n):
            start = [a for a in starts if a <= r < a + t]
            covered.append(bool(start))
            distance.append(min(r - start[0], start[0] + t - 1 - r) * s if start else 0)
        out.append((torch.tensor(covered), torch.tensor(distance, dtype=torch.float64)))
    return out


def windows_log_likelihood(model, image, real, rule="owner", beta=0.2):
    """ln p of a padded image ``(C, H, W)`` under the windows' code, computed from the model's
    teacher-forced per-pixel likelihoods of the four shifted tilings: the top level of the tiles, every
    lower level's pixel from the window owning it (``owner``) or under the mixture of the windows covering
    it, weighted by ``exp(beta * min(distance to the window's edge, tile / 2))`` (``mixture``), only where
    the image ``real = (h, w)`` has pixels."""
    S, K = model.specs[0].height, model.levels
    C, H, W = image.shape
    per_slot = {}
    for a in (0, 1):
        for b in (0, 1):
            oy, ox = a * S // 2, b * S // 2
            nh, nw = (H - oy) // S, (W - ox) // S
            if nh * nw == 0:
                continue
            crop = image[:, oy:oy + nh * S, ox:ox + nw * S]
            tiles = crop.reshape(C, nh, S, nw, S).permute(1, 3, 0, 2, 4).reshape(-1, C, S, S)
            levels = bitsback.levels_from(model, tiles, 0)
            latents = bitsback.prior_means(model, levels, 0)
            pixels = {K: model.p_top(None, latents[K + 1]).log_prob_pixels(levels[K])}
            for k in range(K, 0, -1):
                pixels[k - 1] = bitsback.likelihood(model, k, levels[k], latents[k]).log_prob_pixels(levels[k - 1])
            for k, lp in pixels.items():
                t = lp.shape[-1]
                whole = torch.full((H >> k, W >> k), float("nan"), dtype=lp.dtype)
                whole[oy >> k:(oy >> k) + nh * t, ox >> k:(ox >> k) + nw * t] = \
                    lp.reshape(nh, nw, t, t).permute(0, 2, 1, 3).reshape(nh * t, nw * t)
                per_slot[(a, b, k)] = whole
    total = per_slot[(0, 0, K)].sum()
    rows, cols = _owning_slot(H, S), _owning_slot(W, S)
    for k in range(K):
        inside = torch.zeros(H >> k, W >> k, dtype=torch.bool)
        inside[:-(-real[0] // 2 ** k), :-(-real[1] // 2 ** k)] = True
        if rule == "mixture":
            along_y, along_x = _mixture_log_weights(H >> k, S, k), _mixture_log_weights(W >> k, S, k)
            weighted, weights = [], []  # log(alpha_w p_w) and log alpha_w (unnormalised), -inf where w does not cover
            for a in (0, 1):
                for b in (0, 1):
                    (cy, dy), (cx, dx) = along_y[a], along_x[b]
                    cover = cy[:, None] & cx[None, :]
                    lp = per_slot.get((a, b, k), torch.full(cover.shape, float("nan"))).double()
                    assert torch.equal(cover, ~torch.isnan(lp))  # the tilings cover what the rule says
                    logw = torch.where(cover, beta * torch.minimum(dy[:, None], dx[None, :]).clamp(max=S // 2),
                                       torch.tensor(-math.inf, dtype=torch.float64))
                    weights.append(logw)
                    weighted.append(logw + torch.nan_to_num(lp))
            mixture = torch.logsumexp(torch.stack(weighted), 0) - torch.logsumexp(torch.stack(weights), 0)
            total = total + mixture[inside].sum()
            continue
        r, c = rows[::2 ** k], cols[::2 ** k]
        for a in (0, 1):
            for b in (0, 1):
                owned = (r == a)[:, None] & (c == b)[None, :] & inside
                if owned.any():
                    total = total + per_slot[(a, b, k)][owned].sum()
    assert torch.isfinite(total)
    return float(total.detach())


def test_windows_round_trip_exactly_and_cost_the_likelihood_of_the_owning_windows(models):
    """A subsample model's lossless prior-mean file codes every level below the top in overlapping
    windows: exact (RGB and gray images of odd sizes in one file), previews equal to the tile code's,
    and the stream costs what the owning windows' likelihoods say (within the coder's rounding),
    computed here from the model's teacher-forced likelihoods of the four shifted tilings."""
    model = models[("subsample", 2)]
    assert codec.windows.unsupported(model) is None
    images = [smooth_images(1, 45, 70, seed=31)[0].numpy(), smooth_images(1, 30, 20, channels=1, seed=32)[0].numpy(),
              smooth_images(1, 64, 48, seed=33)[0].numpy()]
    data = codec.encode(model, images, store_fallback=False, latents="prior-mean", window_rule="owner")
    header, words, _ = container.read(data)
    assert header.windows and not header.window_mixture and header.latents == "prior-mean" and header.gray
    assert data[4] == container.VERSION
    out = codec.decode(model, data)
    assert all(np.array_equal(a, b) for a, b in zip(out.images, images))
    tiled = codec.encode(model, images, store_fallback=False, latents="prior-mean", windows=False)
    assert not container.read(tiled)[0].windows
    for k in (1, 2):
        for got, want in zip(codec.decode(model, data, up_to_level=k).images,
                             codec.decode(model, tiled, up_to_level=k).images):
            assert np.array_equal(got, want)
    preview = header.preview_words
    assert preview[2] < preview[1] < preview[0] == len(words)
    # the padding (45 x 70 -> 48 x 80): each level a subsample of the one below, the image's own pixels
    # where it has them, elsewhere the last row / column of the same parity repeated
    x = torch.from_numpy(np.pad(images[0], ((0, 0), (0, 3), (0, 10)), mode="edge"))[None]
    levels = codec.windows.padded_levels(model, x, 45, 70)
    for k in range(3):
        h, w = -(-45 // 2 ** k), -(-70 // 2 ** k)
        assert torch.equal(levels[k][0, :, :h, :w], torch.from_numpy(images[0][:, ::2 ** k, ::2 ** k]))
        if k:
            assert torch.equal(levels[k], levels[k - 1][:, :, ::2, ::2])
    H, W = levels[0].shape[-2:]
    for r in range(45, H):
        source = 44 if r % 2 == 0 else 43
        assert torch.equal(levels[0][0, :, r, 1::2], levels[0][0, :, source, 1::2])
    for c in range(70, W):
        source = 69 if c % 2 else 68
        assert torch.equal(levels[0][0, :, 1::2, c], levels[0][0, :, 1::2, source])
    # the code length: one RGB image alone (the gray one sends one channel, not the model's joint); the
    # padding costs nothing
    one = codec.encode(model, images[:1], store_fallback=False, latents="prior-mean", window_rule="owner")
    bits = 32 * len(container.read(one)[1])
    nll = -windows_log_likelihood(model, levels[0][0], (45, 70)) / np.log(2)
    assert nll <= bits < 1.01 * nll + 64, (bits, nll)
    assert bits < 32 * len(container.read(codec.encode(model, images[:1], store_fallback=False, latents="prior-mean",
                                                         windows=False))[1])


def test_mixed_windows_round_trip_exactly_and_cost_the_mixture_of_the_windows(models):
    """Under the mixture rule (the default where images fit it) each pixel below the top is coded under
    the mixture of the windows covering it: exact (RGB and gray images of odd sizes), the same previews,
    and the stream costs the mixture's likelihood, computed here from the four tilings' teacher-forced
    per-pixel likelihoods and weights of the rule's definition; each pixel's weights sum to one."""
    model = models[("subsample", 2)]
    images = [smooth_images(1, 45, 70, seed=31)[0].numpy(), smooth_images(1, 30, 20, channels=1, seed=32)[0].numpy(),
              smooth_images(1, 64, 48, seed=33)[0].numpy()]
    data = codec.encode(model, images, store_fallback=False, latents="prior-mean")
    header, words, _ = container.read(data)
    assert header.windows and header.window_mixture and data[4] == container.VERSION == 5
    assert all(np.array_equal(a, b) for a, b in zip(codec.decode(model, data).images, images))
    owner = codec.encode(model, images, store_fallback=False, latents="prior-mean", window_rule="owner")
    for k in (1, 2):
        for got, want in zip(codec.decode(model, data, up_to_level=k).images,
                             codec.decode(model, owner, up_to_level=k).images):
            assert np.array_equal(got, want)
    for level in range(2):
        logw = codec.windows.mixture_log_weights(48, 80, level, 16).double()
        assert torch.allclose(torch.logsumexp(logw, 0), torch.zeros((), dtype=torch.float64), atol=1e-6)
    x = torch.from_numpy(np.pad(images[0], ((0, 0), (0, 3), (0, 10)), mode="edge"))[None]
    levels = codec.windows.padded_levels(model, x, 45, 70)
    one = codec.encode(model, images[:1], store_fallback=False, latents="prior-mean", window_rule="mixture")
    bits = 32 * len(container.read(one)[1])
    nll = -windows_log_likelihood(model, levels[0][0], (45, 70), rule="mixture") / np.log(2)
    assert nll <= bits < 1.01 * nll + 64, (bits, nll)
    # another beta gives another likelihood: the check above pins the rule's weights
    assert abs(-windows_log_likelihood(model, levels[0][0], (45, 70), rule="mixture", beta=1.0) / np.log(2) - nll) > 1


def test_window_rules_where_they_apply(models, monkeypatch):
    """``auto`` mixes the windows where the images fit the mixture's pixel limit, else takes the owner
    rule; asking for the mixture beyond it is an error naming the limit; a version-4 file cannot claim
    the mixture, nor a file not coded in windows; version-4 files (owner windows) still decode."""
    model = models[("subsample", 2)]
    image = [smooth_images(1, 40, 36, seed=34)[0].numpy()]
    assert container.read(codec.encode(model, image, store_fallback=False))[0].window_mixture
    monkeypatch.setattr(codec.windows, "MIX_MAX_PIXELS", 32 * 32)
    header = container.read(codec.encode(model, image, store_fallback=False))[0]
    assert header.windows and not header.window_mixture
    with pytest.raises(codec.CodecError, match="more than 1024 pixels .* mixture rule"):
        codec.encode(model, image, windows=True, window_rule="mixture")
    with pytest.raises(codec.CodecError, match="window_rule must be one of"):
        codec.encode(model, image, window_rule="nearest")
    monkeypatch.undo()
    header, stream, extra = container.read(codec.encode(model, image, store_fallback=False, window_rule="owner"))
    old = container.write(header, stream, extra, version=4)
    assert old[4] == 4 and np.array_equal(codec.decode(model, old).images[0], image[0])
    header.window_mixture = True
    with pytest.raises(codec.CodecError, match="version 5 or later, can mix"):
        container.write(header, stream, extra, version=4)
    forged = bytearray(old)
    forged[7] |= 32
    with pytest.raises(codec.CodecError, match="unknown flags"):
        container.read(_with_header_crc(bytes(forged), _header_end(bytes(forged))))
    header.window_mixture, header.windows = False, False
    forged = bytearray(container.write(header, stream, extra))
    forged[7] |= 32
    with pytest.raises(codec.CodecError, match="flag 'window mixture' on a file not coded in windows"):
        container.read(_with_header_crc(bytes(forged), _header_end(bytes(forged))))


def test_windows_only_where_they_apply(models):
    """Windows need transforms that keep a 2x2 phase (not downscale), lossless prior-mean files, and
    images larger than a tile (a one-tile image is its own window: the tile code, in batches); a
    version-3 file cannot claim them, nor a bits-back one."""
    image = [smooth_images(1, 40, 36, seed=34)[0].numpy()]
    downscale = models[("downscale", 3)]
    assert "not pixel subsamplings" in codec.windows.unsupported(downscale)
    assert not container.read(codec.encode(downscale, image, store_fallback=False))[0].windows
    with pytest.raises(codec.CodecError, match="cannot code in windows: its transforms"):
        codec.encode(downscale, image, windows=True)
    model = models[("subsample", 2)]
    with pytest.raises(codec.CodecError, match="prior-mean latents only"):
        codec.encode(model, image, windows=True, latents="bits-back")
    with pytest.raises(codec.CodecError, match="prior-mean latents only"):
        codec.encode(model, image, windows=True, level=1)
    assert not container.read(codec.encode(model, [image[0][:, :16, :16]], store_fallback=False,
                                           latents="prior-mean"))[0].windows
    header, stream, extra = container.read(codec.encode(model, image, store_fallback=False, latents="prior-mean"))
    assert header.windows
    with pytest.raises(codec.CodecError, match="version 4 or later"):
        container.write(header, stream, extra, version=3)
    header.windows = header.window_mixture = False
    forged = bytearray(container.write(header, stream, extra, version=3))
    forged[7] |= 16
    with pytest.raises(codec.CodecError, match="unknown flags"):
        container.read(_with_header_crc(bytes(forged), _header_end(bytes(forged))))
    header.windows, header.latents = True, "bits-back"
    with pytest.raises(codec.CodecError, match="version 4 or later with prior-mean"):
        container.write(header, stream, extra)


def test_the_shipped_model_codes_a_photograph_shorter_in_windows():
    """On a crop of a held-out photograph (the benchmark's motorcycle, 128 x 160) the shipped model's
    windows file is shorter than its tile-by-tile file, and exact."""
    from selfvae import shipped
    model, _ = shipped.load("photo")
    path = os.path.join(os.path.dirname(__import__("skimage").__file__), "data", "motorcycle_left.png")
    image = read_image(path)[:, 200:328, 300:460].copy()
    windowed = codec.encode(model, [image])
    tiled = codec.encode(model, [image], windows=False)
    assert container.read(windowed)[0].windows
    assert len(windowed) < 0.99 * len(tiled), (len(windowed), len(tiled))
    assert np.array_equal(codec.decode(model, windowed).images[0], image)


def test_gray_coding_is_off_when_a_level_is_not_gray():
    from selfvae.codec import bitsback
    gray_level = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    colour = gray_level.clone()
    colour[1, 2, 0, 0] = 7
    mask = [torch.tensor([True, True])]
    assert bitsback.gray_masks([[gray_level]], mask, 0) is mask
    assert bitsback.gray_masks([[colour]], mask, 0) is None
    assert bitsback.gray_masks([[colour]], [torch.tensor([True, False])], 0) is not None
    assert bitsback.gray_masks([[colour]], [torch.tensor([False, False])], 0) is None


# --------------------------------------------------------------------------- lossy
def test_lossy_operating_points(models):
    model = models[("downscale", 3)]
    images = [smooth_images(1, 32, 48, seed=s)[0].numpy() for s in range(4)]
    sizes = {}
    for level in (1, 2, 3):
        for with_z in (False, True):
            data = codec.encode(model, images, level=level, with_z=with_z)
            out = codec.decode(model, data)  # checks the reconstruction's checksum
            assert [im.shape for im in out.images] == [im.shape for im in images]
            assert all(im.dtype == np.uint8 for im in out.images)
            sizes[level, with_z] = len(data)
            # the lossy file carries exactly y_k: its preview is each tile's true level
            preview = codec.decode(model, data, up_to_level=level)
            for got, image in zip(preview.images, images):
                tiles = model.make_levels(tiling.to_tiles(image, 16, 3))[level]
                assert np.array_equal(got, tiling.from_tiles(tiles, 32, 48, 16))
    lossless = len(codec.encode(model, images, store_fallback=False))
    assert sizes[3, False] < sizes[2, False] < sizes[1, False] < lossless
    for level in (1, 2, 3):
        assert sizes[level, True] > sizes[level, False]


def test_lossy_files_decode_to_the_mean_or_the_mode_and_version_1_files_still_read(models):
    """A lossy file records how its receiver reconstructs the levels below y_k (format version 2,
    flag bit 2): the rounded expected value (the default) or the most likely value. Both decode
    to exactly what the encoder reconstructed (the file's checksum) and differ from each other;
    a version-1 file (written before the flag, always the mode) still decodes, and a version-1
    file cannot claim the mean."""
    from selfvae.codec import container

    model = models[("downscale", 3)]
    images = [smooth_images(1, 32, 32, seed=s)[0].numpy() for s in range(2)]
    decoded = {}
    for decode in ("mean", "mode"):
        data = codec.encode(model, images, level=2, decode=decode, latents="bits-back")
        header = container.read(data)[0]
        assert header.decode == decode and data[4] == container.VERSION
        decoded[decode] = codec.decode(model, data).images
    assert any(not np.array_equal(a, b) for a, b in zip(decoded["mean"], decoded["mode"]))
    header, stream, extra = container.read(codec.encode(model, images, level=2, decode="mode", latents="bits-back"))
    old = container.write(header, stream, extra, version=1)
    assert old[4] == 1
    assert all(np.array_equal(a, b) for a, b in zip(codec.decode(model, old).images, decoded["mode"]))
    with pytest.raises(codec.CodecError, match="lossy file of version 2"):
        container.write(container.read(codec.encode(model, images, level=2))[0], stream, extra, version=1)
    with pytest.raises(codec.CodecError, match="decode must be one of"):
        codec.encode(model, images, level=2, decode="median")


def test_lossy_needs_levels_and_a_level_in_range(models):
    with pytest.raises(codec.CodecError, match="plain VAE"):
        codec.encode(models[("downscale", 0)], smooth_images(1, 16, 16), level=1)
    with pytest.raises(codec.CodecError, match="level must be in 1..1"):
        codec.encode(models[("downscale", 1)], smooth_images(1, 16, 16), level=2)


# --------------------------------------------------------------------------- the container's checks
@pytest.fixture(scope="module", params=["bits-back", "prior-mean", "windows"])
def sample_file(models, request):
    if request.param == "windows":  # a subsample model: its prior-mean files are coded in windows
        model = models[("subsample", 2)]
        images = [smooth_images(1, 40, 36, seed=s)[0].numpy() for s in range(2)]
        data = codec.encode(model, images, names=["a", "b"], store_fallback=False, latents="prior-mean")
        assert container.read(data)[0].windows
        return model, images, data
    model = models[("downscale", 1)]
    images = [smooth_images(1, 20, 18, seed=s)[0].numpy() for s in range(2)]
    return model, images, codec.encode(model, images, names=["a", "b"], store_fallback=False, latents=request.param)


def test_another_model_a_future_version_and_garbage_are_named(models, sample_file):
    model, images, data = sample_file
    with pytest.raises(codec.CodecError, match="another model"):
        codec.decode(models[("bits:3", 1)], data)
    other = tiny_model("downscale", 1, steps=11)  # same config, other weights
    with pytest.raises(codec.CodecError, match="another model"):
        codec.decode(other, data)
    future = bytearray(data)
    future[4] = container.VERSION + 1
    with pytest.raises(codec.CodecError, match=f"newer selfvae \\(format version {container.VERSION + 1}\\)"):
        codec.decode(model, bytes(future))
    with pytest.raises(codec.CodecError, match="not a selfvae compressed file"):
        codec.decode(model, b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(codec.CodecError, match="truncated"):
        codec.decode(model, data[:-10])
    with pytest.raises(codec.CodecError, match="unexpected bytes after its end"):
        codec.decode(model, data + b"\0")
    out = codec.decode(model, data)
    assert out.names == ["a", "b"] and all(np.array_equal(a, b) for a, b in zip(out.images, images))


def _with_header_crc(data: bytes, header_end: int) -> bytes:
    """Recompute the header CRC after a header field was changed on purpose."""
    return data[:header_end] + struct.pack("<I", zlib.crc32(data[:header_end])) + data[header_end + 4:]


def test_a_thousand_damaged_files_each_give_a_clear_error_quickly(sample_file):
    model, images, data = sample_file
    # where the header CRC sits: after the fixed header, the entries and the two stream lengths
    header, words, extra = container.read(data)
    header_end = len(data) - 4 * (len(words) + len(extra)) - 4 - 4
    rng = np.random.default_rng(0)
    mutants = []
    for _ in range(600):  # single bit flips anywhere
        b = bytearray(data)
        pos = int(rng.integers(len(b)))
        b[pos] ^= 1 << int(rng.integers(8))
        mutants.append(bytes(b))
    for _ in range(150):  # truncations
        mutants.append(data[:int(rng.integers(len(data)))])
    for _ in range(100):  # extensions
        mutants.append(data + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)))
    extremes = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF]
    for _ in range(200):  # header fields set to extremes, with a valid header CRC
        b = bytearray(data)
        pos = int(rng.integers(4, header_end - 4))
        value = extremes[int(rng.integers(len(extremes)))]
        width = int(rng.choice([1, 2, 4]))
        b[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        mutants.append(_with_header_crc(bytes(b[:len(data)]), header_end))
    assert len(mutants) >= 1000
    slowest = 0.0
    for i, mutant in enumerate(mutants):
        start = time.perf_counter()
        try:
            out = codec.decode(model, mutant)
        except codec.CodecError as e:
            assert str(e) and "\n" not in str(e)
        else:  # a change that does not alter what is decoded (e.g. an image name) must give the same pixels
            assert all(np.array_equal(a, b) for a, b in zip(out.images, images)), i
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 10.0, slowest


def test_command_line_errors_are_one_line(models, sample_file, tmp_path):
    model, _, data = sample_file
    checkpoint = save_model(model, tmp_path / "model.pt")
    damaged = tmp_path / "damaged.svae"
    damaged.write_bytes(data[:50])
    proc = run("selfvae.decompress", damaged, "-o", tmp_path / "out", "--model", checkpoint)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "truncated" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    other = save_model(models[("bits:3", 1)], tmp_path / "other.pt")
    (tmp_path / "good.svae").write_bytes(data)
    proc = run("selfvae.decompress", tmp_path / "good.svae", "-o", tmp_path / "out", "--model", other)
    assert proc.returncode == 2 and "another model" in proc.stderr
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    proc = run("selfvae.compress", broken, "-o", tmp_path / "x.svae", "--model", checkpoint)
    assert proc.returncode == 2 and "broken.png" in proc.stderr and not (tmp_path / "x.svae").exists()
    proc = run("selfvae.compress", broken, "-o", tmp_path / "x.svae", "--model", checkpoint, "--with-z")
    assert proc.returncode == 2 and "--level" in proc.stderr


def test_a_config_key_added_later_leaves_the_fingerprint_of_older_models_alone(models):
    """Files record the model's fingerprint (config + weights). ``blocks_above`` was added to the
    config after files were written: at its default (the model those files were made with) it
    must not change the fingerprint, or every such file would be refused as made by another
    model. Any other value does change it."""
    import hashlib
    import json

    from selfvae.codec.container import model_fingerprint

    model = models[("downscale", 1)]
    before = {k: v for k, v in model.config.to_dict().items() if k != "blocks_above"}  # the config as it was
    h = hashlib.sha256(json.dumps(before, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    assert model.config.blocks_above == -1 and model_fingerprint(model) == h.digest()
    changed = copy.deepcopy(model)
    changed.config = model.config.replace(blocks_above=1)
    assert model_fingerprint(changed) != model_fingerprint(model)
