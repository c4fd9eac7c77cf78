"""Command line: `aimfair <command> ...`, the same functions the notebooks call.

Each command is one `_add_<name>` function that registers its subparser and the function that runs it;
to add a command, write such a pair and list the adder in COMMANDS.
A user mistake (AimfairError) is printed as one line `aimfair: error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from aimfair.config import DATASETS, parse_bias_degree
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.data.splits import SPLITS, group_counts, make_split, write_split


def _run_split(args: argparse.Namespace) -> int:
    splits = make_split(
        args.dataset, args.root, args.target, args.sensitive, args.bias_degree, args.n_train, seed=args.seed
    )
    params = {
        "dataset": args.dataset,
        "root": str(args.root),
        "target": args.target,
        "sensitive": args.sensitive,
        "bias_degree": str(parse_bias_degree(args.bias_degree)),
        "n_train": args.n_train,
        "seed": args.seed,
    }
    write_split(splits, args.out, params)

    print(f"{'split':<6} {'images':>7} " + " ".join(f"{g:>7}" for g in GROUPS))
    for name in SPLITS:
        counts = group_counts(splits[name])
        print(f"{name:<6} {len(splits[name]):>7} " + " ".join(f"{counts[g]:>7}" for g in GROUPS))
    print(f"wrote {', '.join(f'{n}.csv' for n in SPLITS)} and split.json to {args.out}")
    return 0


def _add_split(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "split",
        help="build the biased train split and the val/test manifests",
        description="Write train.csv, val.csv, test.csv (image_id, y, s) and split.json for one setting.",
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, help="dataset folder: CelebA label files or UTKFace images")
    parser.add_argument("--target", required=True, help="target attribute y, e.g. Smiling")
    parser.add_argument("--sensitive", required=True, help="protected attribute s, e.g. Male")
    # Kept as text and parsed by make_split, so a bad value gets the same one-line error as in notebooks.
    parser.add_argument("--bias-degree", required=True, help="minority/majority ratio: 1/9 skewed, 1 even")
    parser.add_argument("--n-train", required=True, type=int, help="size of the biased train split: 20000")
    parser.add_argument("--out", required=True, help="folder for the manifests")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed (UTKFace only)")
    parser.set_defaults(run=_run_split)


def _stage_parser(commands: argparse._SubParsersAction, name: str, help: str,
                  epilog: str | None = None) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, epilog=epilog,
                                 description=help + " (the same function as its notebook).")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def _load(args: argparse.Namespace):
    from aimfair.config import load_params
    from aimfair.core import paths

    params = load_params(args.params)
    return params, paths.repo_root(Path(args.params).resolve().parent)


def _stage_command(name: str, help: str, summary: Callable) -> Callable[[argparse._SubParsersAction], None]:
    """A subcommand that runs one stage: `summary(params, root)` runs it and returns what to print."""

    def add(commands: argparse._SubParsersAction) -> None:
        def run(args: argparse.Namespace) -> int:
            print(summary(*_load(args)))
            return 0

        _stage_parser(commands, name, help).set_defaults(run=run)

    return add


def _world(params, root) -> str:
    from aimfair.pipeline.world import run_world

    folder = run_world(params, root)
    if params.data.dataset != "tinyfaces":
        return f"skipped the built-in world: data.dataset is {params.data.dataset}"
    return f"tinyfaces world in {folder}"


def _data(params, root) -> str:
    from aimfair.pipeline.data import run_data

    return ", ".join(f"{name}: {len(frame)} images" for name, frame in run_data(params, root).items())


def _prompts(params, root) -> str:
    from aimfair.pipeline.prompts import run_prompts

    return run_prompts(params, root).diversity.to_string(index=False)


def _generator(params, root) -> str:
    from aimfair.pipeline.generator import run_generator

    if params.generator.corpus == "dataset":  # two commands, so the committed model's stage imports no dataset code
        raise AimfairError("generator.corpus is dataset: train that model with `aimfair dataset-generator`")
    return f"built-in generator checkpoint in {run_generator(params, root)}"


def _dataset_generator(params, root) -> str:
    from aimfair.pipeline.dataset_generator import run_dataset_generator

    if params.generator.corpus != "dataset":
        raise AimfairError(f"generator.corpus is {params.generator.corpus}: `aimfair dataset-generator` trains the model "
                           "of corpus dataset; train this one with `aimfair generator`")
    return f"built-in generator checkpoint in {run_dataset_generator(params, root)}"


def _mask(params, root) -> str:
    from aimfair.pipeline.mask import run_mask

    lines = []
    for seed in params.seeds:
        result = run_mask(params, root, seed)
        lines.append(f"seed {seed}: {len(result.mask.tensors)} of {len(result.scores)} tensors selected, "
                     f"{result.mask.trainable_entries():,} parameters ({result.seconds:.1f} s)")
    return "\n".join(lines)


def _evaluate(params, root) -> str:
    from aimfair.evaluation.evaluate import write_evaluation
    from aimfair.pipeline.evaluate import run_evaluate

    return write_evaluation(run_evaluate(params, root), params, root)["table_md"].read_text()


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from aimfair.pipeline.pretrain import run_pretrain

        params, root = _load(args)
        for seed in args.seed or params.seeds:
            history = run_pretrain(params, root, seed)
            print(f"seed {seed}: best validation accuracy {history['val_acc'].max():.2f}%")
        return 0

    parser = _stage_parser(commands, "pretrain", "stage 04: train the biased classifier")
    parser.add_argument("--seed", type=int, action="append", help="seed to train (repeatable; default: params seeds)")
    parser.set_defaults(run=run)


def _process_state(device: str, threads: int):
    """An accelerate PartialState when started by `accelerate launch` or torchrun with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    # one GPU per process, or CPU processes talking over gloo. Work is dealt out in whole runs, so a process
    # can wait at the final barrier for as long as another's last run takes: far past torch's default timeout
    state = PartialState(cpu=cpu, timeout=timedelta(days=3))
    if cpu and threads == 0:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))
    return state


def _add_generation(name: str, help: str, what: str, verb: str, module: str, function: str):
    """A generation command (pool or repairs) that shards its batches over processes when launched so."""

    def add(commands: argparse._SubParsersAction) -> None:
        def run(args: argparse.Namespace) -> int:
            import importlib

            params, root = _load(args)
            state = _process_state(params.generate.device, params.generate.threads)
            result = getattr(importlib.import_module(module), function)(params, root, state=state)
            if state is None or state.is_main_process:
                print(f"{what} complete: {len(result.manifest)} images ({result.generated} {verb} now by this "
                      f"process, {result.reused} already there)")
                fidelity = getattr(result, "fidelity", None)
                if fidelity is not None:
                    read = " / ".join(f"{r['group']} {r['both']:.1f}" for r in fidelity.per_group.to_dict("records"))
                    print(f"prompt fidelity, % read as their own group: {read} (reports/fidelity.json)")
            return 0

        parser = _stage_parser(commands, name, help,
                               f"Several GPUs: accelerate launch --multi_gpu --num_processes N -m aimfair {name}; "
                               f"several CPU processes: torchrun --nproc_per_node N -m aimfair {name}")
        parser.set_defaults(run=run)

    return add


def _add_sharded_training(name: str, help: str, module: str, function: str, summarize: Callable):
    """A training command whose runs are dealt out to processes when launched under torchrun or accelerate."""

    def add(commands: argparse._SubParsersAction) -> None:
        def run(args: argparse.Namespace) -> int:
            import importlib

            params, root = _load(args)
            state = _process_state(params.pretrain.device, params.pretrain.threads)
            result = getattr(importlib.import_module(module), function)(params, root, state=state)
            if result is not None:  # (the processes other than the main one of table4 return None)
                print(summarize(result))
            return 0

        parser = _stage_parser(commands, name, help,
                               f"Several GPUs: accelerate launch --multi_gpu --num_processes N -m aimfair {name}; "
                               f"several CPU processes: torchrun --nproc_per_node N -m aimfair {name}. Each run "
                               "goes to one process; `dvc repro` afterwards reuses them all")
        parser.set_defaults(run=run)

    return add


def _parameter(text: str) -> tuple[str, object]:
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, yaml.safe_load(value)  # YAML typing: 100 -> int, true -> bool, [1, 2] -> list


def _add_notebook(commands: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from aimfair.notebooks import run_notebook

        run_notebook(args.notebook, args.output, dict(args.parameter or []))
        return 0

    parser = commands.add_parser("notebook", help="execute a pipeline notebook with papermill (as dvc.yaml does)",
                                 description="Execute NOTEBOOK into OUTPUT with papermill; a user mistake "
                                             "inside the notebook is reported as one line.")
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("-p", "--parameter", type=_parameter, action="append", metavar="NAME=VALUE",
                        help="a value for the parameters cell (repeatable), e.g. -p seed=100")
    parser.set_defaults(run=run)


def _add_check(commands: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from aimfair.preflight import input_warnings, missing_inputs

        params, root = _load(args)
        for warning in input_warnings(params, root):  # likely wrong but usable: said, and the status is unchanged
            print(f"warning: {warning}", file=sys.stderr)
        problems = missing_inputs(params, root)
        for problem in problems:
            print(f"missing: {problem}", file=sys.stderr)
        if problems:
            raise AimfairError(f"{len(problems)} input(s) of {args.params} are missing or incomplete (listed above): "
                               "provide them and run `aimfair check` again")
        print(f"ready: every input of {args.params} is in place ({params.data.dataset} {params.data.target}/"
              f"{params.data.sensitive}, generate.model {params.generate.model})")
        return 0

    parser = commands.add_parser("check", help="list every missing or incomplete input of a setting, before a long run",
                                 description="Check that the dataset files (and that their labels fill the split), the "
                                             "diffusion weights and the ImageNet weights of a setting are in place; "
                                             "lists every problem at once and exits with status 2 if there is one. "
                                             "Warns, without failing, about dataset images smaller than "
                                             "pretrain.input_size and data folders that are symlinks.")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.set_defaults(run=run)


# Each entry adds one subcommand; its parser sets `run`, the function that executes it.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_split,
    _add_check,
    _stage_command("world", "render the built-in tinyfaces world", _world),
    _stage_command("data", "stage 00: write the biased train split, val and test", _data),
    _stage_command("prompts", "stage 01: contextual prompts per group", _prompts),
    _stage_command("generator", "stage 02: train the built-in text-to-image model on studio renders", _generator),
    _stage_command("dataset-generator", "stage 02 of a real-data setting: train the built-in model on the dataset's "
                   "own images (generator.corpus: dataset)", _dataset_generator),
    _add_generation("generate", "stage 03: generate the synthetic pool per group", "pool", "generated",
                    "aimfair.pipeline.generate", "run_generate"),
    _add_generation("repair", "edit real images to balance the groups (the repairing strategy's data)",
                    "repaired set", "edited", "aimfair.pipeline.repair", "run_repair"),
    _add_pretrain,
    _stage_command("mask", "stage 05: selective mask generation on each seed's biased model", _mask),
    _add_sharded_training("finetune", "stage 06: train every strategy for every seed", "aimfair.pipeline.finetune",
                          "run_finetune", lambda runs: runs.to_string(index=False)),
    _stage_command("evaluate", "stage 07: fairness metrics and tables", _evaluate),
    _add_sharded_training("table4", "the paper's Table 4: partial fine-tuning baselines (experiments/dvc.yaml)",
                          "aimfair.pipeline.table4", "run_table4", lambda result: result.files["table_md"].read_text()),
    _add_notebook,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aimfair", description="AIM-Fair reproduction pipeline.")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status (argparse itself exits 2 on bad syntax)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AimfairError as error:
        print(f"aimfair: error: {error}", file=sys.stderr)
        return 2
