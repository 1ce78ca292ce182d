"""Run ``python -m selfvae.train`` with faults injected from outside the training code.

    python tests/fault_injection.py TRAIN-ARGS...

Environment:
``FAULT_KILL_AT_STEP=N``   SIGKILL the process when step N starts (after the checkpoints before it).
``FAULT_NAN_STEPS=2,3``    the loss of these steps is NaN (the guard must skip them).
``FAULT_KILL_IN_SAVE=N``   SIGKILL the process in the middle of the N-th checkpoint write (1-based),
                           leaving the half-written temporary file behind.

Steps are counted from the start of this process, so use them on fresh runs.
"""
import os
import signal
import sys
import tempfile

from selfvae import checkpoint, train


def main() -> int:
    kill_at = int(os.environ.get("FAULT_KILL_AT_STEP", "-1"))
    nan_steps = {int(s) for s in os.environ.get("FAULT_NAN_STEPS", "").split(",") if s}
    kill_in_save = int(os.environ.get("FAULT_KILL_IN_SAVE", "-1"))
    real_loss, real_save = train.compute_loss, train.save_checkpoint
    calls = {"loss": 0, "save": 0}

    def faulty_loss(net, model, x, autocast_dtype):
        step = calls["loss"]
        calls["loss"] += 1
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        bits = real_loss(net, model, x, autocast_dtype)
        if step in nan_steps:
            bits["bpd"] = bits["bpd"] * float("nan")
        return bits

    def faulty_save(state, path):
        calls["save"] += 1
        if calls["save"] == kill_in_save:
            fd, _ = tempfile.mkstemp(prefix=checkpoint.TEMP_PREFIX, suffix=".pt", dir=os.path.dirname(path))
            os.write(fd, b"PK\x03\x04 half of a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(state, path)

    train.compute_loss, train.save_checkpoint = faulty_loss, faulty_save
    return train.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
