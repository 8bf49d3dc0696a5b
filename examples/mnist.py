"""Train a CNN on MNIST with minicnn: the course's eip4 network and recipe by default (99.4% in 20 epochs).

    python examples/mnist.py                      # eip4, Adam 0.003 with inverse-time decay, 20 epochs, CPU
    python examples/mnist.py --device gpu         # the same on an NVIDIA GPU (needs the gpu extra)
    python examples/mnist.py --resume runs/eip4-seed0.ckpt   # continue an interrupted run

Ctrl-C finishes the current batch, saves a checkpoint and exits; --resume continues exactly there.
"""
import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _threads_from_argv(argv):
    """--threads N, read before Numba loads (it sizes its thread pool then). BLAS stays on one thread:
    minicnn runs its matrix products inside its own batch-parallel threads (kernels/parallel.py)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


_n = _threads_from_argv(sys.argv)
if _n:
    os.environ["NUMBA_NUM_THREADS"] = _n

import minicnn  # noqa: E402
import minicnn.backend  # noqa: E402
from minicnn import optim  # noqa: E402
from minicnn.checkpoint import atomic_write, load_checkpoint, save_checkpoint  # noqa: E402
from minicnn.data import load_mnist  # noqa: E402
from minicnn.models import get_model, RECIPES  # noqa: E402
from minicnn.nn import summary  # noqa: E402
from minicnn.training import Trainer, to_device_dataset  # noqa: E402
from minicnn import config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="eip4", choices=sorted(RECIPES), help="model preset (default eip4)")
    p.add_argument("--epochs", type=int, help="epochs (default: the preset's recipe, 20 for eip4)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the recipe's, 128 for eip4)")
    p.add_argument("--lr", type=float, help="initial learning rate (default: the recipe's, 0.003 for eip4)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="GPU: replay each training step's forward and backward from a CUDA graph recorded once "
                        "(the same arithmetic and dropout masks as eager steps; minicnn/cuda_graph.py). "
                        "Default: on with --device gpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="MNIST folder (default: $MINICNN_DATA or the user cache folder)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random affine augmentation (default: the recipe's; on for compact and tiny)")
    p.add_argument("--validation", type=int, default=0, metavar="N",
                   help="hold out the last N training images and evaluate on them instead of the test set "
                        "(for tuning a recipe without looking at the test set; 5000 is usual)")
    p.add_argument("--save", help="last checkpoint path (default runs/MODEL-seedSEED.ckpt); the best goes "
                                  "beside it as *.best.ckpt and the history as *.history.json")
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--train-limit", type=int, help="use only the first N training images (quick runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--conv", default="auto", choices=config.CONV_ALGORITHMS,
                   help="convolution algorithm: auto (the fastest the backend has for each layer), im2col (the "
                        "lesson path: im2col, one GEMM per group, col2im), or a fast one by name (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads for the Numba kernels and the batch-parallel "
                                               "convolutions (default: NUMBA_NUM_THREADS or all cores)")
    return p.parse_args(argv)


def side_paths(save):
    stem = save[:-5] if save.endswith(".ckpt") else save
    return stem + ".best.ckpt", stem + ".history.json"


def build(args, train, test):
    recipe = dict(RECIPES[args.model])
    with_augment = recipe.pop("with_augment", {})
    augment = recipe["augment"] if args.augment is None else args.augment
    if augment:
        recipe.update(with_augment)   # what changes in the recipe when augmentation is on (before --lr etc.)
    for key in ("epochs", "batch_size", "lr", "augment"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    minicnn.manual_seed(args.seed)
    model = get_model(args.model, **recipe.get("model_args", {})).to(args.device)
    opt = optim.Adam(model.parameters(), lr=recipe["lr"], eps=recipe.get("eps", 1e-8))
    epoch_schedule = batch_schedule = None
    kind = recipe["schedule"]
    if kind == "inverse_time":
        epoch_schedule = optim.InverseTimeDecay(opt, recipe["decay"])
    elif kind == "step":
        epoch_schedule = optim.StepDecay(opt, recipe["step_size"], recipe["gamma"])
    elif kind == "one_cycle":
        steps = recipe["epochs"] * -(-len(train[0]) // recipe["batch_size"])
        batch_schedule = optim.OneCycle(opt, recipe["lr"], steps)
    augment = recipe.get("augment_args") if recipe.get("augment") else None
    trainer = Trainer(model, opt, train, test, batch_size=recipe["batch_size"], seed=args.seed,
                      epoch_schedule=epoch_schedule, batch_schedule=batch_schedule, augment=augment,
                      cuda_graph=args.device == "gpu" and args.cuda_graph is not False)
    return trainer, recipe


def main(argv=None):
    args = parse_args(argv)
    with config.using(conv=args.conv):
        return run(args)


def run(args):
    if args.threads:
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if args.device == "gpu":
        minicnn.backend.require_gpu()
    elif args.cuda_graph:
        raise SystemExit("--cuda-graph needs --device gpu (a CUDA graph is a recording of GPU launches)")
    resume_state = load_checkpoint(args.resume) if args.resume else None
    if resume_state is not None:  # the run's own settings win, so it ends where it would have
        for key, value in resume_state["args"].items():
            if key not in ("resume", "device", "cuda_graph", "data_dir", "no_progress", "save", "threads"):
                setattr(args, key, value)
    args.save = args.save or (resume_state["args"]["save"] if resume_state else f"runs/{args.model}-seed{args.seed}{'-val' if args.validation else ''}.ckpt")
    best_path, history_path = side_paths(args.save)

    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    if args.validation:
        if not 0 < args.validation < len(x_train):
            raise SystemExit(f"--validation {args.validation}: must be between 1 and {len(x_train) - 1}")
        x_test, y_test = x_train[-args.validation:], y_train[-args.validation:]
        x_train, y_train = x_train[:-args.validation], y_train[:-args.validation]
    if args.train_limit:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    train = to_device_dataset(x_train, y_train, args.device)
    test = to_device_dataset(x_test, y_test, args.device)
    trainer, recipe = build(args, train, test)
    summary(trainer.model, (1, 28, 28))
    split = "val" if args.validation else "test"
    mode = (" (CUDA graph)" if trainer.cuda_graph else " (eager)") if args.device == "gpu" else ""
    print(f"recipe: {json.dumps(recipe)}  device: {args.device}{mode}  seed: {args.seed}  "
          f"train {len(train[0])} images, evaluated on {len(test[0])} {split} images")
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        print(f"resumed from {args.resume}: epoch {trainer.epoch + 1}, batch {trainer.batch}")

    def on_interrupt(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        print("\ninterrupted: finishing this batch and saving a checkpoint (Ctrl-C again to abort)", flush=True)
    signal.signal(signal.SIGINT, on_interrupt)

    def save(path):
        save_checkpoint(path, {"trainer": trainer.state_dict(), "args": vars(args), "recipe": recipe})

    best = max((h["test_accuracy"] for h in trainer.history), default=-1.0)
    while trainer.epoch < recipe["epochs"]:
        record = trainer.train_epoch(recipe["epochs"], show_progress=not args.no_progress)
        if record is None:
            save(args.save)
            print(f"saved {args.save}; continue with: python examples/mnist.py --resume {args.save}")
            return 130
        print(f"Epoch {record['epoch']:2d}/{recipe['epochs']}  loss {record['loss']:.4f}  acc {record['accuracy']:.4f}  "
              f"{split}_loss {record['test_loss']:.4f}  {split}_acc {record['test_accuracy']:.4f}  "
              f"lr {record['lr']:.10f}  {record['seconds']:.1f}s", flush=True)
        save(args.save)
        if record["test_accuracy"] > best:
            best = record["test_accuracy"]
            save(best_path)
        atomic_write(history_path, lambda f: json.dump(trainer.history, f, indent=1), mode="w")
    final = trainer.history[-1]["test_accuracy"]
    print(f"final {split} accuracy {final:.4f}  best {best:.4f} (epoch "
          f"{max(trainer.history, key=lambda h: h['test_accuracy'])['epoch']})  "
          f"mean epoch {sum(h['seconds'] for h in trainer.history) / len(trainer.history):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
