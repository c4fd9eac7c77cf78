"""Command line: `aimfair <command> ...`, the same functions the notebooks call.

Each command is one `_add_<name>` function that registers its subparser and the function that runs it;
to add a command, write such a pair and list the adder in COMMANDS.
A user mistake (AimfairError) is printed as one line `aimfair: error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from aimfair.data.splits import DATASETS, SPLITS, group_counts, make_split, parse_bias_degree, write_split
from aimfair.errors import AimfairError
from aimfair.groups import GROUPS


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


# Each entry adds one subcommand; its parser sets `run`, the function that executes it.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_split,)


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
