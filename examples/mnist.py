"""Train a CNN on MNIST with minicnn: the course's eip4 network and recipe by default (99.4% in 20 epochs).

    python examples/mnist.py                      # eip4, Adam 0.003 with inverse-time decay, 20 epochs, CPU
    python examples/mnist.py --device gpu         # the same on an NVIDIA GPU (needs the gpu extra)
    python examples/mnist.py --resume runs/eip4-seed0.ckpt   # continue an interrupted run
    python examples/mnist.py --resume runs/eip4-seed0.ckpt --epochs 30   # train a finished run further

Ctrl-C finishes the current batch, saves a checkpoint and exits; --resume continues exactly there.
Every argument is checked before the data loads: a mistake is one line on stderr and exit status 2.
A loss that is not a finite number stops training at once (exit status 1) and writes no checkpoint.

Resuming: the checkpoint holds the run's settings. --model, --seed, --lr, --batch-size, --augment,
--validation and --train-limit may be left out; given with another value they are an error naming both
(another value is another run). --device, --conv, --threads, --data-dir and --no-progress may change.
--epochs N trains up to epoch N: past the planned epochs too where the schedule is per epoch (inverse-time
decay goes on as if N had been planned from the start); a one-cycle run cannot be extended or shortened,
its schedule spans the planned steps. A finished run given no larger --epochs says so and trains nothing.
"""
import argparse
import json
import math
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _threads_from_argv(argv):
    """--threads N, read before Numba loads (it sizes its thread pool then). BLAS stays on one thread:
    minicnn runs its matrix products inside its own batch-parallel threads (kernels/cpu_fast/parallel.py).
    Anything but a positive integer is left to the argument checks (Numba would fail to load)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
        else:
            continue
        return value if value.isdigit() and int(value) > 0 else None
    return None


_n = _threads_from_argv(sys.argv)
if _n:
    os.environ["NUMBA_NUM_THREADS"] = _n

import minicnn  # noqa: E402
import minicnn.backend  # noqa: E402
from minicnn import config, optim  # noqa: E402
from minicnn.checkpoint import CheckpointError, CheckpointSet, RunLock, load_checkpoint  # noqa: E402
from minicnn.data import MNIST_FILES, default_data_dir, load_mnist, read_mnist_folder  # noqa: E402
from minicnn.models import RECIPES, get_model  # noqa: E402
from minicnn.nn import summary  # noqa: E402
from minicnn.training import NonFiniteLossError, Trainer, to_device_dataset  # noqa: E402

MNIST_TRAIN_IMAGES = 60000  # the verified MNIST training set (its checksums fix its size)
IMAGE = (1, 28, 28)
PRESETS = {  # one line each for --help; parameter counts and recipes are read from the code
    "eip4": "the course's network (EIP4 week 2): 3x3 convolutions with batch norm and dropout, a 4x4 head",
    "compact": "Conv-BatchNorm-ReLU blocks, one max pool, a global average pool and a linear head",
    "tiny": "depthwise-separable blocks of 21 channels, a global average pool and a linear head",
}
# what a checkpoint pins: a flag that disagrees with it is an error on --resume (--epochs: see plan_resume)
RUN_SETTINGS = (("model", "--model"), ("seed", "--seed"), ("validation", "--validation"),
                ("train_limit", "--train-limit"))
RECIPE_SETTINGS = (("lr", "--lr"), ("batch_size", "--batch-size"), ("augment", "--augment"))


class UsageError(Exception):
    """A mistake in the command line, its files or its data: one line on stderr, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes are one line (no usage block), raised as UsageError for main() to print;
    --help ends with a line on each preset."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")

    def format_help(self):
        self.epilog = describe_presets()  # builds the three models: only when help is asked for
        return super().format_help()


# ---- the command line ----------------------------------------------------------------------------
def describe_presets():
    lines = ["model presets (--model):"]
    for name, what in PRESETS.items():
        model, recipe = get_model(name), RECIPES[name]
        params = sum(p.size for p in model.parameters()) + sum(b.size for _, b in model.named_buffers())
        schedule = {"inverse_time": f"lr {recipe['lr']} / (1 + {recipe.get('decay')} * epoch)",
                    "one_cycle": f"one-cycle lr peaking at {recipe['lr']}"}.get(recipe["schedule"], recipe["schedule"])
        augment = "with augmentation" if recipe["augment"] else "no augmentation"
        switch = recipe.get("with_augment")
        if switch:
            augment += f" (--augment: lr {switch['lr']}, {switch['schedule'].replace('_', '-')}, no dropout)"
        lines.append(f"  {name:8s} {what}; {params:,} parameters; Adam, {schedule}, batch {recipe['batch_size']}, "
                     f"{recipe['epochs']} epochs, {augment}")
    return "\n".join(lines) + ("\n\nexit status: 0 done (or nothing left to do), 1 stopped at a loss that is not "
                               "finite, 2 a mistake in the arguments, files or data, 130 interrupted (saved)")


def make_parser():
    p = OneLineParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(RECIPES),
                   help="model preset, each with its own recipe (default eip4; listed below)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="epochs (default: the preset's recipe, 20 for eip4); 0 prints the network and the recipe "
                        "and exits; with --resume, train up to N")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images per step (default: the recipe's, 128 for eip4); a final batch of one image joins "
                        "the batch before it")
    p.add_argument("--lr", type=float,
                   help="initial (one-cycle: peak) learning rate (default: the recipe's, 0.003 for eip4)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="cpu (Numba kernels, or NumPy) or gpu (an NVIDIA GPU through CuPy: the gpu extra); "
                        "default cpu")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="GPU: replay each training step's forward and backward from a CUDA graph recorded once "
                        "(the same arithmetic and dropout masks as eager steps; minicnn/cuda_graph.py). "
                        "Default: on with --device gpu")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seeds the weights, the shuffle, dropout and augmentation: the same seed repeats a run "
                        "(default 0)")
    p.add_argument("--data-dir", metavar="FOLDER",
                   help="MNIST folder: files checked against MNIST's SHA-256 and downloaded there when missing "
                        "(default: $MINICNN_DATA or ~/.cache/minicnn/mnist)")
    p.add_argument("--no-verify", action="store_true",
                   help="read the four MNIST-format files in --data-dir as they are: no checksums, no download "
                        "(a subset such as tests/data/mnist_small, or another data set in MNIST's format)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random affine augmentation (default: the recipe's; on for compact and tiny)")
    p.add_argument("--validation", type=int, metavar="N",
                   help="hold out the last N training images and evaluate on them instead of the test set "
                        "(for tuning a recipe without looking at the test set; 5000 is usual)")
    p.add_argument("--save", metavar="PATH",
                   help="last checkpoint path (default runs/MODEL-seedSEED.ckpt; with --resume, that run's); the "
                        "best goes beside it as *.best.ckpt and the history as *.history.json")
    p.add_argument("--resume", metavar="PATH",
                   help="checkpoint to continue from (the run's own settings come with it)")
    p.add_argument("--train-limit", type=int, metavar="N",
                   help="train on the first N training images only (quick runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--conv", default="auto", choices=config.CONV_ALGORITHMS,
                   help="convolution algorithm: auto (the fastest the backend has for each layer), im2col (the "
                        "lesson path: im2col, one GEMM per group, col2im), or a fast one by name (default auto)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the Numba kernels and the batch-parallel convolutions (default: "
                        "NUMBA_NUM_THREADS or all cores)")
    return p


def parse_args(argv=None):
    return make_parser().parse_args(argv)


def check_args(args):
    """Every check that needs neither the data nor a file: UsageError naming the flag and its value."""
    def at_least(flag, value, low, note=""):
        if value is not None and value < low:
            raise UsageError(f"{flag} {value}: must be at least {low}{note}")
    at_least("--epochs", args.epochs, 0, " (0 prints the network and the recipe)")
    at_least("--batch-size", args.batch_size, 1)
    at_least("--threads", args.threads, 1)
    at_least("--seed", args.seed, 0)
    at_least("--train-limit", args.train_limit, 1)
    at_least("--validation", args.validation, 1, " (leave it out to evaluate on the test set)")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr {args.lr}: must be a finite number above 0")
    if not args.no_verify:
        if args.validation is not None and args.validation >= MNIST_TRAIN_IMAGES:
            raise UsageError(f"--validation {args.validation}: must be below the {MNIST_TRAIN_IMAGES:,} training images")
        left = MNIST_TRAIN_IMAGES - (args.validation or 0)
        if args.train_limit is not None and args.train_limit > left:
            raise UsageError(f"--train-limit {args.train_limit}: the training set has {left:,} images")
    elif args.data_dir is None:
        raise UsageError("--no-verify reads --data-dir as it is: give --data-dir FOLDER")
    if args.cuda_graph and args.device != "gpu":
        raise UsageError("--cuda-graph needs --device gpu (a CUDA graph is a recording of GPU launches)")
    if args.save is not None and os.path.isdir(args.save):
        raise UsageError(f"--save {args.save} is a folder; give a file path such as {os.path.join(args.save, 'run.ckpt')}")


def check_device(args):
    if args.device == "gpu":
        try:
            minicnn.backend.require_gpu()
        except (ImportError, RuntimeError) as exc:
            raise UsageError(f"--device gpu: {one_line(exc)}") from None


def check_data_dir(args):
    """The data folder: one that exists or can be made, writable where files would be downloaded into it."""
    folder = args.data_dir if args.data_dir is not None else default_data_dir()
    flag = f"--data-dir {folder}" if args.data_dir is not None else f"the MNIST folder {folder}"
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{flag} is a file, not a folder")
    if args.no_verify:
        if not os.path.isdir(folder):
            raise UsageError(f"{flag}: no such folder")
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} cannot be created: {exc.strerror}") from None
    missing = [n for n in MNIST_FILES if not any(os.path.isfile(os.path.join(folder, n + s)) for s in ("", ".gz"))]
    if missing and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} is not writable, and {len(missing)} MNIST file(s) would be downloaded into it")


def one_line(exc):
    return " ".join(str(exc).split())


# ---- what the run is: a new recipe, or the checkpoint's ---------------------------------------------
def recipe_for(args):
    """A new run's recipe: the preset's (eip4 unless --model), with the flags given applied (--augment first:
    it switches eip4's recipe). Also settles the model and seed of args (default eip4, 0)."""
    args.model, args.seed = args.model or "eip4", 0 if args.seed is None else args.seed
    recipe = dict(RECIPES[args.model])
    with_augment = recipe.pop("with_augment", {})
    augment = recipe["augment"] if args.augment is None else args.augment
    if augment:
        recipe.update(with_augment)   # what changes in the recipe when augmentation is on (before --lr etc.)
    for key in ("epochs", "batch_size", "lr", "augment"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    return recipe


def check_run_checkpoint(state, path):
    if not (isinstance(state, dict) and isinstance(state.get("trainer"), dict) and isinstance(state.get("args"), dict)
            and isinstance(state.get("recipe"), dict)):
        raise UsageError(f"{path} is a minicnn checkpoint, but not of a run of examples/mnist.py (it has no "
                         f"trainer, args and recipe)")


def plan_resume(args, state):
    """Take the run's settings from its checkpoint (a flag that disagrees is an error naming both values) and
    decide how many epochs it trains: the recipe's, or --epochs (the module docstring, "Resuming")."""
    path, saved, recipe = args.resume, state["args"], dict(state["recipe"])
    for key, flag in RUN_SETTINGS + RECIPE_SETTINGS:
        given = getattr(args, key)
        kept = recipe.get(key) if (key, flag) in RECIPE_SETTINGS else saved.get(key)
        if key in ("validation", "train_limit") and not kept:
            kept = None  # 0 or None: all of the training set, evaluated on the test set
        if given is not None and given != kept:
            if key == "augment":
                flag = shown = "--augment" if given else "--no-augment"
            else:
                shown = f"{flag} {given}"
            raise UsageError(f"{shown} conflicts with the run in {path} ({key} {kept}): leave {flag} out to "
                             f"continue that run, or start a new run with another --save path")
        setattr(args, key, kept)
    if args.no_verify and not saved.get("no_verify"):
        raise UsageError(f"--no-verify conflicts with the run in {path}, which trained on the verified MNIST files")
    args.no_verify = bool(saved.get("no_verify"))
    args.data_dir = args.data_dir if args.data_dir is not None else saved.get("data_dir")  # the run's, by default
    trainer = state["trainer"]
    done, midway, planned = trainer.get("epoch", 0), trainer.get("batch", 0) > 0, recipe["epochs"]
    target = planned if args.epochs is None else args.epochs
    if target < done + midway:
        raise UsageError(f"--epochs {target}: the run in {path} has already trained {done} epoch(s)"
                         f"{' and part of the next' if midway else ''}")
    if target != planned and recipe["schedule"] == "one_cycle":
        raise UsageError(f"--epochs {target}: the run in {path} follows a one-cycle schedule laid out over its "
                         f"{planned} epochs (its learning rate anneals to almost 0 at their end), so it cannot be "
                         f"extended or shortened; start a new run with --epochs {target}")
    recipe["epochs"] = target
    return recipe


def finished_line(path, state, recipe):
    history = state["trainer"].get("history") or [{}]
    split = "val" if state["args"].get("validation") else "test"
    last = history[-1].get("test_accuracy")
    more = ("start a new run with more --epochs to train longer" if recipe["schedule"] == "one_cycle"
            else f"give --epochs N with N above {recipe['epochs']} to train it further")
    return (f"the run in {path} is finished: {recipe['epochs']} of {recipe['epochs']} epochs trained"
            + (f", final {split} accuracy {last:.4f}" if isinstance(last, float) else "") + f"; {more}")


# ---- building and training -----------------------------------------------------------------------
def make_model(args, recipe):
    minicnn.manual_seed(args.seed)
    return get_model(args.model, **recipe.get("model_args", {})).to(args.device)


def single_image_batch_norm(model):
    """The name of the first BatchNorm2d that sees a 1x1 map (one image gives it one value per channel), or None."""
    for name, kind, shape, *_ in summary(model, IMAGE, print_fn=None).rows:
        if kind == "BatchNorm2d" and shape[1:] == (1, 1):
            return name
    return None


def build(args, train, test, recipe=None):
    """(Trainer, recipe) for the run described by args (and recipe: the checkpoint's, on --resume)."""
    recipe = recipe_for(args) if recipe is None else recipe
    model = make_model(args, recipe)
    opt = optim.Adam(model.parameters(), lr=recipe["lr"], eps=recipe.get("eps", 1e-8))
    epoch_schedule = None
    kind = recipe["schedule"]
    if kind == "inverse_time":
        epoch_schedule = optim.InverseTimeDecay(opt, recipe["decay"])
    elif kind == "step":
        epoch_schedule = optim.StepDecay(opt, recipe["step_size"], recipe["gamma"])
    augment = recipe.get("augment_args") if recipe.get("augment") else None
    trainer = Trainer(model, opt, train, test, batch_size=recipe["batch_size"], seed=args.seed,
                      epoch_schedule=epoch_schedule, augment=augment,
                      cuda_graph=args.device == "gpu" and args.cuda_graph is not False)
    if kind == "one_cycle":  # laid out over the run's steps: len(loader) per epoch (a final single image merged)
        steps = recipe["epochs"] * len(trainer.loader)
        if steps < 2:
            raise UsageError(f"{len(train[0])} training images in batches of {recipe['batch_size']} give {steps} "
                             f"step(s) in {recipe['epochs']} epoch(s); the one-cycle schedule needs at least 2")
        trainer.batch_schedule = optim.OneCycle(opt, recipe["lr"], steps)
    return trainer, recipe


def load_data(args):
    try:
        if args.no_verify:
            (x_train, y_train), test = read_mnist_folder(args.data_dir)
        else:
            (x_train, y_train), test = load_mnist(args.data_dir)
    except (OSError, RuntimeError, ValueError) as exc:
        raise UsageError(f"MNIST: {one_line(exc)}") from None
    if args.validation:
        if args.validation >= len(x_train):
            raise UsageError(f"--validation {args.validation}: must be below the {len(x_train):,} training images")
        test = x_train[-args.validation:], y_train[-args.validation:]
        x_train, y_train = x_train[:-args.validation], y_train[:-args.validation]
    if args.train_limit:
        if args.train_limit > len(x_train):
            raise UsageError(f"--train-limit {args.train_limit}: the training set has {len(x_train):,} images")
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    return to_device_dataset(x_train, y_train, args.device), to_device_dataset(*test, args.device)


def announce_first_compile(device):
    """One line before the backend compiles its first kernel in this process (none when all come from the cache)."""
    def say(info):
        print(f"compiling the CPU kernels for the first time: about {info['seconds']:.0f} s, once; they are "
              f"cached in {info['cache_dir']}", flush=True)
    minicnn.backend.on_first_compile(say, device=device)


def main(argv=None):
    try:
        args = parse_args(argv)
        check_args(args)
        with config.using(conv=args.conv):
            return run(args)
    except (UsageError, CheckpointError) as exc:
        print(f"mnist.py: error: {one_line(exc)}", file=sys.stderr)
        return 2


def run(args):
    check_device(args)
    announce_first_compile(args.device)
    state = None
    if args.resume:
        state = load_checkpoint(args.resume)  # CheckpointError: missing, foreign, pickled or damaged
        check_run_checkpoint(state, args.resume)
        recipe = plan_resume(args, state)
        args.save = args.save or state["args"].get("save")
        if state["trainer"].get("epoch", 0) >= recipe["epochs"] and not state["trainer"].get("batch"):
            print(finished_line(args.resume, state, recipe))
            return 0
        try:  # its weights fit this preset (before any data loads)
            make_model(args, recipe).load_state_dict(state["trainer"]["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{args.resume} does not fit this run: {one_line(exc)}") from None
    else:
        recipe = recipe_for(args)
    if args.batch_size == 1 or args.train_limit == 1:
        layer = single_image_batch_norm(make_model(args, recipe))
        if layer is not None:
            flag = "--batch-size 1" if args.batch_size == 1 else "--train-limit 1"
            raise UsageError(f"{flag}: batch norm in training mode normalises each channel over the batch, and "
                             f"{args.model}'s layer {layer} sees a 1x1 map, so one image leaves it one value per "
                             f"channel; use at least 2")
    if recipe["epochs"] == 0:  # nothing to train: the network and the recipe
        summary(make_model(args, recipe), IMAGE)
        print(f"recipe: {json.dumps(recipe)}  (--epochs 0: nothing trained)")
        return 0
    if args.threads:
        minicnn.backend.set_num_threads(args.threads)
    check_data_dir(args)
    args.save = args.save or f"runs/{args.model}-seed{args.seed}{'-val' if args.validation else ''}.ckpt"
    ckpts = CheckpointSet(args.save)
    lock = RunLock(ckpts.last)
    try:
        lock.acquire()  # also proves the folder of --save can be made and written
    except OSError as exc:
        raise UsageError(f"--save {args.save}: cannot write its lock file {ckpts.lock}: {exc.strerror}") from None
    try:
        try:
            ckpts.reconcile()  # temporary files of killed runs removed; best and history re-derived from the last
        except CheckpointError:
            if state is not None and os.path.abspath(args.resume) == os.path.abspath(ckpts.last):
                raise
            # a fresh run replaces the whole set at its first save; the damaged file is not read
        if state is not None:
            state = ckpts.load(args.resume)  # and that run's best so far
        return train(args, recipe, state, ckpts)
    finally:
        lock.release()


def train(args, recipe, state, ckpts):
    train_set, test_set = load_data(args)
    trainer, recipe = build(args, train_set, test_set, recipe)
    summary(trainer.model, IMAGE)
    split = "val" if args.validation else "test"
    mode = (" (CUDA graph)" if trainer.cuda_graph else " (eager)") if args.device == "gpu" else ""
    print(f"recipe: {json.dumps(recipe)}  device: {args.device}{mode}  seed: {args.seed}  "
          f"train {len(train_set[0])} images, evaluated on {len(test_set[0])} {split} images")
    if state is not None:
        try:
            trainer.load_state_dict(state["trainer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{args.resume} does not fit this run: {one_line(exc)}") from None
        print(f"resumed from {args.resume}: epoch {trainer.epoch + 1}, batch {trainer.batch}")

    def on_interrupt(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        print("\ninterrupted: finishing this batch and saving a checkpoint (Ctrl-C again to abort)", flush=True)
    signal.signal(signal.SIGINT, on_interrupt)

    def save(record=None):
        run_state = {"trainer": trainer.state_dict(), "args": vars(args), "recipe": recipe}
        metric = None if record is None else record["test_accuracy"]
        try:
            ckpts.save(run_state, trainer.history, metric=metric, epoch=None if record is None else record["epoch"])
        except OSError as exc:
            raise UsageError(f"cannot write the checkpoint {ckpts.last}: {exc.strerror}") from None

    while trainer.epoch < recipe["epochs"]:
        try:
            record = trainer.train_epoch(recipe["epochs"], show_progress=not args.no_progress)
        except NonFiniteLossError as exc:
            kept = (f"the last checkpoint {ckpts.last} is left as it was" if os.path.exists(ckpts.last)
                    else "no checkpoint was written")
            print(f"mnist.py: training stopped: {exc}; {kept}", file=sys.stderr)
            return 1
        if record is None:
            save()
            print(f"saved {ckpts.last}; continue with: python examples/mnist.py --resume {ckpts.last}")
            return 130
        print(f"Epoch {record['epoch']:2d}/{recipe['epochs']}  loss {record['loss']:.4f}  acc {record['accuracy']:.4f}  "
              f"{split}_loss {record['test_loss']:.4f}  {split}_acc {record['test_accuracy']:.4f}  "
              f"lr {record['lr']:.10f}  {record['seconds']:.1f}s", flush=True)
        save(record)
    history = trainer.history
    print(f"final {split} accuracy {history[-1]['test_accuracy']:.4f}  best {ckpts.best_metric:.4f} "
          f"(epoch {ckpts.best_epoch})  mean epoch {sum(h['seconds'] for h in history) / len(history):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
