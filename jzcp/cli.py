"""The ``jzcp`` command line.

Each subcommand is a small function ``cmd_*(args) -> int``; heavy imports (JAX, the networks) happen inside them so
``jzcp --help`` is instant. Global flags: ``--data-dir`` (else ``$JZCP_DATA``, else the defaults of
:mod:`jzcp.data`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="benchmark data directory (default: $JZCP_DATA, else ../shared/data next to the repository, ...)",
    )


def cmd_data_check(args) -> int:
    from jzcp import data

    loc = data.locate_data_dir(args.data_dir)
    print(f"data directory: {loc.path}  ({loc.how})")
    rows = data.check_data(loc.path, validate=not args.quick)
    print(data.format_check(rows))
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    return 0 if all(r.found and r.ok is not False for r in rows) else 1


def cmd_space_nb201(args) -> int:
    import jax
    import numpy as np

    from jzcp.networks import nb201 as net
    from jzcp.spaces import nb201 as space

    if args.arch is not None:
        cells = [space.parse(args.arch)]
    elif args.index is not None:
        cells = [space.official_index(args.data_dir).to_ops(args.index)]
    else:
        cells = list(np.asarray(space.sample(jax.random.key(args.seed), args.sample)))
    rows = []
    for ops in cells:
        ops = np.asarray(ops, np.int32)
        row = {
            "arch": space.format(ops),
            "ops": ops.tolist(),
            "code": int(space.encode(ops)),
            "params": int(net.param_count(ops)),
            "params_M": round(float(net.param_count(ops)) / 1e6, 6),
            "connected": bool(space.is_connected(ops)),
            "unreachable_branch": bool(space.has_unreachable_branch(ops)),
        }
        try:
            table = space.official_index(args.data_dir)
            row = {"index": int(table.to_index(ops)), **row}
        except FileNotFoundError as e:  # the index needs the ground truth; the rest does not
            row = {"index": None, **row}
            print(f"note: official index unavailable: {e}", file=sys.stderr)
        row["nbsz_valid"] = not row["unreachable_branch"]
        rows.append(row)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=1))
    else:
        for row in rows:
            print("\n".join(f"{k:>18}: {v}" for k, v in row.items()), end="\n\n")
    return 0


def _space_rows(name: str, args) -> list[dict]:
    """Rows (encoding forms + params + FLOPs) of ``--arch`` or ``--sample K`` architectures of a space."""
    import jax
    import numpy as np

    key = jax.random.key(args.seed)
    if name == "nb101":
        from jzcp.networks import nb101 as net
        from jzcp.spaces import nb101 as space

        if args.arch is not None:
            text = args.arch.strip()
            cells = [space.parse(json.loads(text)) if text.startswith("{") else space.parse_naslib(text)]
        else:
            batch = space.sample(key, args.sample)
            cells = [space.Cell(*(np.asarray(a)[i] for a in batch)) for i in range(args.sample)]
        rows = []
        for cell in cells:
            enc = net.check_arch(net.encode(cell))  # ValueError for a disconnected / too large cell
            rows.append({"hash": space.spec_hash(cell), "naslib": list(space.format_naslib(cell)),
                         "spec": {k: np.asarray(v).tolist() for k, v in space.format(cell).items()},
                         "params": int(net.param_count(enc)), "flops_M": round(float(net.flops(enc)) / 1e6, 3)})
        return rows
    if name == "nb301":
        from jzcp.networks import darts as net
        from jzcp.spaces import darts as space

        if args.arch is not None:
            archs = [space.parse_text(args.arch)]
        else:
            archs = list(np.asarray(space.sample(key, args.sample)))
        return [{"compact": str(space.format_compact(a)), "genotype": space.format_genotype(a),
                 "params": int(net.param_count(a)), "flops_M": round(float(net.flops(a)) / 1e6, 3)} for a in archs]
    if name == "macro":
        from jzcp.networks import macro as net
        from jzcp.spaces import macro as space

        archs = [space.parse(args.arch)] if args.arch is not None else list(np.asarray(space.sample(key, args.sample)))
        return [{"arch": space.format(a), "index": int(space.encode(a)), "params": int(net.param_count(a)),
                 "flops_M": round(float(net.flops(a)) / 1e6, 3)} for a in archs]
    from jzcp.networks import mobilenetv3 as net
    from jzcp.spaces import mobilenetv3 as space

    cfg = net.MobileNetV3NetConfig(width_mult=args.width_mult, resolution=args.resolution)
    if args.arch is not None:
        archs = [space.parse(args.arch)]
    else:
        batch = space.sample(key, args.sample)
        archs = [space.Arch(*(np.asarray(a)[i] for a in batch)) for i in range(args.sample)]
    return [{"arch": space.format(a), "params": int(net.param_count(a, cfg)),
             "flops_M": round(float(net.flops(a, cfg)) / 1e6, 3)} for a in archs]


def cmd_space_other(args) -> int:
    rows = _space_rows(args.space, args)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=1))
    else:
        for row in rows:
            print("\n".join(f"{k:>10}: {v}" for k, v in row.items()), end="\n\n")
    return 0


def cmd_score(args) -> int:
    from jzcp.scoring import run_score_command

    return run_score_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jzcp",
        description="Zero-cost NAS in JAX: compiled search spaces, zero-cost proxies, evolved proxy programs.",
    )
    parser.add_argument("--data-dir", default=None, help="benchmark data directory (default: $JZCP_DATA, else ../shared/data next to the repository, ./data, ~/.jzcp/data)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_data = sub.add_parser("data", help="inspect the benchmark data directory")
    data_sub = p_data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p_check = data_sub.add_parser("check", help="list every data file jzcp uses: found / missing / invalid, with its role")
    p_check.add_argument("--quick", action="store_true", help="only check presence, do not load the files")
    p_check.add_argument("--json", action="store_true", help="also print the rows as JSON")
    _add_data_dir(p_check)
    p_check.set_defaults(func=cmd_data_check)

    p_space = sub.add_parser("space", help="encode / inspect architectures of a search space")
    space_sub = p_space.add_subparsers(dest="space", required=True, metavar="SPACE")
    p_nb201 = space_sub.add_parser("nb201", help="NAS-Bench-201: index, params, validity of a cell")
    which = p_nb201.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="arch string, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|...|'")
    which.add_argument("--index", type=int, help="official NAS-Bench-201 index (0..15624)")
    which.add_argument("--sample", type=int, metavar="K", help="K uniformly random cells")
    p_nb201.add_argument("--seed", type=int, default=0, help="seed for --sample")
    p_nb201.add_argument("--json", action="store_true", help="print JSON")
    _add_data_dir(p_nb201)
    p_nb201.set_defaults(func=cmd_space_nb201)
    for name, help_, arch_help in (
        ("nb101", "NAS-Bench-101 cells: hash, NASLib tuple, spec, params, FLOPs",
         "NASLib tuple '(0, 1, ..., 2, 4)' or JSON spec '{\"matrix\": [[...]], \"ops\": [...]}'"),
        ("nb301", "DARTS / NAS-Bench-301 cells: compact tuple, genotype, params, FLOPs",
         "NASLib compact tuple '(((0, 3), ...), ((...)))' or a 'Genotype(normal=...)' string"),
        ("macro", "NAS-Bench-Macro: 8-character string, index, params, FLOPs", "e.g. '01202120'"),
        ("mobilenetv3", "OFA MobileNetV3 sub-networks: ks / e / d, params, FLOPs",
         "OFA dict as JSON, e.g. '{\"ks\": [3, ...], \"e\": [...], \"d\": [...]}'"),
    ):
        p_sp = space_sub.add_parser(name, help=help_)
        which = p_sp.add_mutually_exclusive_group(required=True)
        which.add_argument("--arch", help=arch_help)
        which.add_argument("--sample", type=int, metavar="K", help="K uniformly random architectures")
        p_sp.add_argument("--seed", type=int, default=0, help="seed for --sample")
        p_sp.add_argument("--json", action="store_true", help="print JSON")
        if name == "mobilenetv3":
            p_sp.add_argument("--resolution", type=int, default=224, help="input resolution (default 224)")
            p_sp.add_argument("--width-mult", type=float, default=1.0, help="width multiplier (1.0 or 1.2)")
        p_sp.set_defaults(func=cmd_space_other)

    from jzcp.scoring import add_score_arguments

    p_score = sub.add_parser(
        "score",
        help="score architectures with zero-cost proxies; CSV + correlation JSON + plots (resumable)",
        description="Score architectures of a search space with zero-cost proxies and correlate with ground truth.",
    )
    add_score_arguments(p_score)
    _add_data_dir(p_score)
    p_score.set_defaults(func=cmd_score)

    from jzcp.evolve_cli import add_evolve_arguments, run_evolve_command  # JAX is imported inside the runner

    p_evolve = sub.add_parser(
        "evolve",
        help="evolve EZNAS proxy programs on real network statistics (checkpointed, resumable)",
        description="EZNAS genetic programming: evolve zero-cost proxy programs on statistics of real networks.",
    )
    add_evolve_arguments(p_evolve)
    _add_data_dir(p_evolve)
    p_evolve.set_defaults(func=run_evolve_command)

    from jzcp.predictor.cli import add_predictor_arguments  # light: JAX is imported inside its runners

    add_predictor_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from jzcp.data import DataError

    try:
        return args.func(args)
    except (DataError, ValueError) as e:
        print(f"jzcp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jzcp: interrupted (partial results are kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
