"""Command line: ``python -m prunecxr {run,report,profiles,check-data,calibrate-phantom,provenance,import,methods}`` (also ``prunecxr``).

Examples::

    python -m prunecxr run                                  # the default profile, 01 → 07
    python -m prunecxr run --profile smoke --run try1 -p n_seeds=2 --notebooks 02-04
    python -m prunecxr report --run try1
    python -m prunecxr profiles
    python -m prunecxr check-data --dataset nih-cxr-lt --data-root /data/nih-cxr-lt
    python -m prunecxr check-data --dataset csv --data-root /data/mine --uncertain zero
    python -m prunecxr provenance figures/default/fig3_frequency.png
    python -m prunecxr import --predictions preds.parquet --labels labels.csv --run mine --method my_pruning
    python -m prunecxr import --release /data/nih-cxr-lt_L1-prune_preds --allow-pickle --run paper
    python -m prunecxr methods

``make reproduce PROFILE=... RUN=... PARAMS="k=v k=v" NOTEBOOKS=03-05`` maps onto ``run``.
Exit status: 0 on success, 1 when a notebook fails (or check-data finds problems, or
provenance finds a stale figure), 2 for a usage error (an unknown parameter, a bad value, an unknown notebook or profile).
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prunecxr",
        description="Run the prunecxr notebooks and build their report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="execute the notebooks (01 → 07) with papermill",
        description="Execute the selected notebooks in order with a profile's parameters plus "
        "overrides; stop at the first failing notebook. Run again to continue: finished "
        "stages skip their work. Executed notebooks and the report go to reports/<run>/.",
    )
    run.add_argument(
        "--profile",
        default="default",
        help="a profile of lib/prunecxr/profiles.toml (default: %(default)s); "
        "see `python -m prunecxr profiles`",
    )
    run.add_argument(
        "--run",
        default=None,
        help="run name (folders runs/, figures/, reports/); default: the profile's",
    )
    run.add_argument(
        "--notebooks",
        default=None,
        metavar="SPEC",
        help="which notebooks: 03, 03-05, 01_data,04 (default: all)",
    )
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter (repeatable): -p n_seeds=3 "
        "-p \"methods=['global_l1']\" -p dataset=nih-cxr-lt",
    )
    run.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel (default: %(default)s)")
    shown = run.add_mutually_exclusive_group()
    shown.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="stream the notebooks' printed output (instead of the progress line)",
    )
    shown.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress line: only a line as each notebook starts and ends",
    )

    rep = sub.add_parser("report", help="(re)build reports/<run>/index.html and notebook exports")
    rep.add_argument("--run", required=True, help="the run's name")

    sub.add_parser("profiles", help="list the profiles and their parameters")

    chk = sub.add_parser(
        "check-data",
        help="check a dataset before notebook 01 runs (labels, splits, images)",
        description="Run the checks of notebook 01 on a dataset: label files and their "
        "columns, 0/1 values, image paths, duplicates, patient-disjoint splits, a split "
        "without images, and that every image exists and can be read. Exit status 1 when "
        "something is wrong. See data_access.md.",
    )
    chk.add_argument(
        "--dataset", required=True, help="nih-cxr-lt, mimic-cxr-lt, csv or nih-phantom"
    )
    chk.add_argument(
        "--data-root", default="", help="the folder of the data (default: $PRUNECXR_DATA)"
    )
    chk.add_argument(
        "--uncertain",
        default="error",
        help="blank or -1 labels: error (default), zero or one, as notebook 01's "
        "parameter uncertain",
    )
    chk.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="key of a generated patient split (csv without a split column)",
    )
    chk.add_argument(
        "--labels-csv",
        default="",
        help="csv only: the label table, relative to the data root (default: labels.csv)",
    )
    for option, what in (
        ("image-column", "image path column"),
        ("patient-column", "patient id column"),
        ("split-column", "train/val/test column"),
    ):
        chk.add_argument(f"--{option}", default="", help=f"csv only: {what}; empty: inferred")
    chk.add_argument(
        "--class-columns",
        default="",
        metavar="A,B,...",
        help="csv only: class columns, comma-separated; empty: inferred",
    )
    cal = sub.add_parser(
        "calibrate-phantom",
        help="fit the phantom's per-finding strengths to published AUROCs",
        description="Fit each phantom finding's strength so that the default recipe's dense "
        "models reach CheXNet's published per-class test AUROC (condition calibrated) or one "
        "common AUROC, the median of CheXNet's (condition equal), and write the table with "
        "its provenance as package data (the renderer reads it). It looks at dense AUROC "
        "only, never at pruning. About 2 minutes an iteration on 2 CPU cores. --check "
        "measures the shipped table instead, without writing.",
    )
    cal.add_argument(
        "--condition",
        choices=("calibrated", "equal", "both"),
        default="both",
        help="which table to fit (default: %(default)s)",
    )
    cal.add_argument(
        "--seeds", type=int, default=2, help="training seeds per iteration (default: 2)"
    )
    cal.add_argument("--max-iterations", type=int, default=12, help="default: %(default)s")
    cal.add_argument(
        "--tolerance-mean",
        type=float,
        default=0.015,
        help="stop when the mean |AUROC - target| is at most this (default: %(default)s)",
    )
    cal.add_argument(
        "--tolerance-max",
        type=float,
        default=0.04,
        help="... and every finding's is at most this (default: %(default)s)",
    )
    cal.add_argument(
        "--profile",
        default="default",
        help="the phantom profile whose recipe the table is fitted for (default: %(default)s)",
    )
    cal.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per model (default: the profile's, 0 = every usable core); "
        "1 is far faster on a machine other work shares",
    )
    cal.add_argument(
        "--out",
        default=None,
        help="folder to write phantom_difficulty_<condition>.json to "
        "(default: the package's data/reference/)",
    )
    cal.add_argument(
        "--check",
        action="store_true",
        help="measure the shipped table (target beside reached AUROC); write nothing",
    )
    prov = sub.add_parser(
        "provenance",
        help="how a figure was made, and whether its inputs changed since",
        description="Print the provenance a figure file carries (run, package version, commit, "
        "notebook cell, parameters, input files with their SHA-256) and check each input "
        "against the file as it is now. Exit status 1 when the figure is stale (an input "
        "changed or is missing).",
    )
    prov.add_argument("file", help="a figure's .png, .html, .csv or .provenance.json")

    imp = sub.add_parser(
        "import",
        help="import predictions made elsewhere into a run (then run notebooks 04-07)",
        description="Write a run's prediction store (prune/<method>/probs.npy, meta.json, "
        "metrics.parquet), labels.parquet and data record from predictions in the interchange "
        "layout (docs/extending.md) or from the authors' pickled release. Every file is checked "
        "before anything is written. Then: python -m prunecxr run --run NAME --notebooks 04-07.",
    )
    imp.add_argument("--run", required=True, help="the run to write (created if absent)")
    what = imp.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--predictions",
        metavar="PATH",
        help="a long table (.csv, .parquet: seed, level, image_id, class, prob) or an "
        "array (.npy with a .json sidecar)",
    )
    what.add_argument(
        "--release", metavar="DIR", help="a folder of the authors' released .pkl files"
    )
    imp.add_argument(
        "--labels",
        default="",
        metavar="PATH",
        help="the labels table (.csv, .parquet: image_id, [split], [patient_id], one 0/1 "
        "column per class); may be left out when the run has labels.parquet",
    )
    imp.add_argument(
        "--method",
        default="",
        help="the store's name, prune/<method>/ (default: imported; global_l1 for --release)",
    )
    imp.add_argument(
        "--level-name",
        default="sparsity",
        help="the axis of the long table's levels: sparsity, bits or channel_fraction "
        "(default: %(default)s)",
    )
    imp.add_argument(
        "--dataset",
        default="imported",
        help="the data record's dataset name (default: %(default)s)",
    )
    imp.add_argument(
        "--allow-pickle",
        action="store_true",
        help="--release only: allow unpickling the release (runs code; trusted files only)",
    )

    sub.add_parser(
        "methods",
        help="list the compression methods: built in, and registered by installed "
        "packages (entry point group prunecxr.methods)",
    )
    return parser


def _cmd_calibrate(args) -> int:
    from . import calibrate

    if args.seeds < 1 or args.max_iterations < 1:
        print("error: --seeds and --max-iterations must be at least 1", file=sys.stderr)
        return 2
    conditions = ("calibrated", "equal") if args.condition == "both" else (args.condition,)
    seeds = tuple(range(args.seeds))
    overrides = {} if args.threads is None else {"threads": args.threads}
    for condition in conditions:
        if args.check:
            record = calibrate.check(
                condition, seeds=seeds, profile=args.profile, recipe_overrides=overrides
            )
        else:
            record = calibrate.calibrate(
                condition,
                seeds=seeds,
                max_iterations=args.max_iterations,
                tolerance_mean=args.tolerance_mean,
                tolerance_max=args.tolerance_max,
                profile=args.profile,
                recipe_overrides=overrides,
                log=print,
            )
            print(f"wrote {calibrate.write_table(record, args.out)}")
        table = calibrate.compare(record)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(
            f"mean |difference| {table['difference'].abs().mean():.3f}, "
            f"largest {table['difference'].abs().max():.3f}",
            flush=True,
        )
    return 0


def _cmd_provenance(args) -> int:
    from . import provenance

    try:
        text, stale = provenance.describe(args.file)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 1 if stale else 0


def _cmd_run(args) -> int:
    from . import runlock, runner, stages

    try:
        result = runner.run_notebooks(
            profile=args.profile,
            run=args.run,
            notebooks=args.notebooks,
            overrides=args.param,
            report=not args.no_report,
            kernel=args.kernel,
            log_output=args.verbose,
            progress="off" if args.verbose or args.quiet else "auto",
        )
    except runner.NotebookFailed as err:
        print(f"\nerror: {err.describe()}", file=sys.stderr)
        print(
            "\nFix the cause and run the same command again: finished stages are skipped.",
            file=sys.stderr,
        )
        return 1
    except (
        stages.ParameterError,
        stages.NotebookError,
        ValueError,
        FileNotFoundError,
        runlock.RunLocked,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = sum(nb.seconds for nb in result.notebooks)
    print(f"done: run {result.run!r}, {len(result.notebooks)} notebook(s) in {total:.1f} s")
    return 0


def _cmd_report(args) -> int:
    from . import paths, report

    try:
        paths.check_run_name(args.run)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if (
        not paths.run_paths(args.run).reports.is_dir()
        and not paths.run_paths(args.run).root.is_dir()
    ):
        print(
            f"error: run {args.run!r} has no runs/ or reports/ folder under {paths.home()}",
            file=sys.stderr,
        )
        return 2
    print(report.build_report(args.run))
    return 0


def _cmd_profiles(args) -> int:
    from . import runner

    print(runner.describe_profiles())
    return 0


def _cmd_check_data(args) -> int:
    from . import data

    options = {"uncertain": args.uncertain, "split_seed": args.split_seed}
    csv = {
        "labels_csv": args.labels_csv,
        "image_column": args.image_column,
        "patient_column": args.patient_column,
        "split_column": args.split_column,
        "class_columns": [c.strip() for c in args.class_columns.split(",") if c.strip()],
    }
    options.update({k: v for k, v in csv.items() if v})
    try:
        problems, notes = data.check_with_warnings(args.dataset, args.data_root, **options)
    except ValueError as err:  # an unknown dataset name or option
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in notes:
        print(f"warning: {line}")
    print(data.format_layout_report(args.dataset, args.data_root, problems))
    return 1 if problems else 0


def _cmd_import(args) -> int:
    import shutil

    from . import config, paths, runlock
    from .compress import evaluate, importer, interchange

    try:
        rp = paths.run_paths(paths.check_run_name(args.run))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    new_run = not rp.root.exists()
    try:
        runlock.acquire(args.run)
        if args.release:
            method = args.method or importer.PAPER_METHOD
            path = importer.import_predictions(
                args.run, args.release, allow_pickle=args.allow_pickle, method=method
            )
            evaluate.write_method_metrics(args.run, method)
        else:
            path = interchange.import_predictions(
                args.run,
                args.predictions,
                labels=args.labels or None,
                method=args.method or "imported",
                level_name=args.level_name,
                dataset=args.dataset,
            )
        config.init_run(args.run, profile=None)
    except (ValueError, FileNotFoundError, importer.PickleOptInRequired, runlock.RunLocked) as err:
        print(f"error: {err}", file=sys.stderr)
        runlock.release(args.run)
        if (
            new_run
            and rp.root.exists()
            and {p.name for p in rp.root.iterdir()} <= {runlock.LOCK_FILE}
        ):
            shutil.rmtree(rp.root)  # the checks wrote nothing: leave no run behind
        return 2
    runlock.release(args.run)
    print(f"wrote {path}; next: python -m prunecxr run --run {args.run} --notebooks 04-07")
    return 0


def _cmd_methods(args) -> int:
    from .compress import methods

    print(methods.describe_methods())
    return 0


#: what to do about an operating-system error, by errno
_OS_HINTS = {
    errno.EROFS: "the file system is read-only: set PRUNECXR_HOME (and PRUNECXR_CACHE) to a writable folder",
    errno.EACCES: "permission denied: set PRUNECXR_HOME (and PRUNECXR_CACHE) to a folder you can write",
    errno.EPERM: "permission denied: set PRUNECXR_HOME (and PRUNECXR_CACHE) to a folder you can write",
    errno.ENOSPC: (
        "no space left on the device: free space (or set PRUNECXR_HOME / PRUNECXR_CACHE "
        "to a larger disk) and run the same command again; finished work is kept"
    ),
    errno.EDQUOT: "disk quota exceeded: free space and run the same command again; finished work is kept",
    errno.ENAMETOOLONG: "a file name is too long for the file system: use a shorter run name (--run)",
}


def describe_os_error(err: OSError) -> str:
    """One line: what failed, on which path, and what to do."""
    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or str(err)
    hint = _OS_HINTS.get(err.errno, "")
    return f"error: cannot write or read{where}: {what}" + (f"; {hint}" if hint else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m prunecxr`` and the ``prunecxr`` script."""
    args = _parser().parse_args(argv)
    handler = {
        "run": _cmd_run,
        "report": _cmd_report,
        "profiles": _cmd_profiles,
        "check-data": _cmd_check_data,
        "calibrate-phantom": _cmd_calibrate,
        "provenance": _cmd_provenance,
        "import": _cmd_import,
        "methods": _cmd_methods,
    }[args.command]
    try:
        return handler(args)
    except OSError as err:  # a read-only or full disk, a name too long: no traceback
        print(describe_os_error(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
