"""The benchmark tables, built from the results records (``results.json``) that every evaluation writes; logs are
never read.

    python3 scripts/tables.py output/                      # every protocol found: printed, and saved in output/tables/
    python3 scripts/tables.py output/ --protocol base2new --seeds 1 2 3 --out paper_tables/

Protocols (the ``protocol`` field of each record, set by the protocol scripts):
  base2new  Base / New / HM per dataset for each method, then the average over the datasets (HM of the averages, as
            the papers compute it); mean and standard deviation over seeds.
  xd        cross-dataset transfer: ImageNet (source) and the 10 other datasets, their average.
  dg        domain generalisation: ImageNet (source), ImageNetV2, -Sketch, -A, -R, their average.
  fewshot   accuracy per shot count, per dataset and averaged over the datasets.

A method is a trainer by default; ``--method LABEL=TRAINER:CONFIG[,CONFIG]`` names methods yourself (e.g. two
configs of one trainer side by side). The baselines' published numbers (trainers/results/published.py, each with its
source) are extra rows marked "(published)". Runs that are missing (a seed, a dataset, a shot count) are listed with
the command that makes them, and every mean over fewer runs than expected is marked with a *.
Standard deviations are over seeds, population form (numpy's default, as Dassl's parse_test_res.py).
Outputs: the terminal (tabulate), and in --out: <table>.md, <table>.tex, <table>.csv (one row per number), and the
figures base2new.png (Base / New / HM per dataset for each method) and fewshot.png (accuracy against shots).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.fileio import WriteError  # noqa: E402
from trainers.results.builders import Options, build_tables  # noqa: E402
from trainers.results.reading import (  # noqa: E402
    PROTOCOLS,
    RECORD_NAME,
    MethodSpec,
    TablesError,
    dataset_keys,
    dataset_name,
    find_records,
)
from trainers.results.render import to_text, write_outputs  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", help="output folders (searched for results.json) or record files")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "all"), default="all")
    parser.add_argument("--out", default="", help="folder for .md/.tex/.csv/.png (default: <first root>/tables)")
    parser.add_argument("--seeds", type=int, nargs="+", help="expected seeds (default: every seed found)")
    parser.add_argument("--datasets", nargs="+",
                        help="expected datasets, as configs/datasets keys (default: every one found)")
    parser.add_argument("--method", action="append", default=[], metavar="LABEL=TRAINER[:CONFIG,...]",
                        help="a method of the tables (repeatable; default: one per trainer)")
    parser.add_argument("--shots", type=int, help="base2new/xd/dg: the shot count to show when several were run")
    parser.add_argument("--shots-list", type=int, nargs="+", help="fewshot: expected shot counts (default: found)")
    parser.add_argument("--no-published", action="store_true", help="leave out the published rows")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when runs are missing")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        keys = dataset_keys()
        options = Options(
            seeds=tuple(args.seeds) if args.seeds else None,
            datasets=tuple(dataset_name(d, keys) for d in args.datasets) if args.datasets else None,
            methods=tuple(MethodSpec.parse(m) for m in args.method),
            shots=args.shots, shots_list=tuple(args.shots_list) if args.shots_list else None,
            published=not args.no_published, digits=args.digits,
        )
        records, problems = find_records(args.roots)
    except TablesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not records:
        print(f"error: no {RECORD_NAME} under {' '.join(args.roots)}: run the protocol scripts first "
              "(e.g. bash scripts/base2new.sh CoOp).", file=sys.stderr)
        return 2
    protocols = PROTOCOLS if args.protocol == "all" else (args.protocol,)
    tables, errors = build_tables(records, protocols, options, keys)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if not tables:
        if not errors:
            print(f"error: no records of protocol {args.protocol} among the {len(records)} found.", file=sys.stderr)
        return 2
    for table in tables:
        print(to_text(table, options.digits))
    out_dir = args.out or os.path.join(args.roots[0] if os.path.isdir(args.roots[0]) else ".", "tables")
    try:
        written = write_outputs(tables, out_dir, options.digits, figures=not args.no_figures)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Written: {', '.join(written)}")
    if errors:
        return 2
    if args.strict and any(table.missing for table in tables):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
