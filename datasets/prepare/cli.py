"""Download, verify and lay out the benchmark datasets the way the modules in datasets/ read them.

  python -m datasets.prepare oxford_pets dtd --root $DATA     prepare two datasets
  python -m datasets.prepare all --root $DATA                  every dataset (ImageNet and Stanford Cars: manual)
  python -m datasets.prepare --check --root $DATA              verify every dataset, download nothing

A prepared dataset is detected and skipped; an interrupted download continues where it stopped. A damaged archive
is reported, moved aside (<name>.broken) and forgotten as verified, so the next run downloads it again; the other
datasets go on, and the exit status says that something failed.
"""
import argparse
import difflib
import os
import sys
import tempfile

from ..benchmark import DATASETS_DOC
from . import ilsvrc
from .fetch import DownloadError, Fetcher, ManualFileNeeded, browser_url, copy_file
from .layout import check_layout, dataset_classes, format_table, layout_attributes, module_files
from .sources import SOURCES
from .unpack import (
    DEFAULT_MAX_RATIO,
    DEFAULT_MAX_SIZE,
    MEMBERS_ENV,
    RATIO_ENV,
    SIZE_ENV,
    BrokenArchiveError,
    ExpansionLimits,
    LayoutMismatch,
    UnsafeArchiveError,
    human,
    is_placed,
    mark_placed,
    place_archive,
)

STEP_ERRORS = (DownloadError, UnsafeArchiveError, LayoutMismatch, ilsvrc.ValLabelError)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m datasets.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="datasets by config name (configs/datasets/NAME.yaml, e.g. oxford_pets) or class name "
                             "(OxfordPets); 'all' for every one")
    parser.add_argument("--root", default=os.environ.get("DATA", ""),
                        help="the folder that holds the datasets (default: $DATA)")
    parser.add_argument("--check", action="store_true",
                        help="only verify layout, split file and image count of each dataset (all when none named)")
    parser.add_argument("--downloads", default="", help="where downloaded archives are kept (default: ROOT/downloads)")
    parser.add_argument("--force", action="store_true",
                        help="place every file again from its verified archive, even where the dataset looks ready")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete each archive once its contents are in place (a later --force downloads again)")
    parser.add_argument("--max-expand-ratio", metavar="R",
                        help="refuse an archive that would write more than R times its own size (default: "
                             f"${RATIO_ENV}, else {DEFAULT_MAX_RATIO:g}; 'none': no limit)")
    parser.add_argument("--max-expand-size", metavar="SIZE",
                        help="refuse an archive that would write more than SIZE, e.g. 500G (default: "
                             f"${SIZE_ENV}, else {human(DEFAULT_MAX_SIZE)}; 'none': no limit)")
    parser.add_argument("--max-members", metavar="N",
                        help=f"refuse an archive of more than N members (default: ${MEMBERS_ENV}, else one per KiB of "
                             "the archive and at least 10,000; 'none': no limit)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="print the source table for the named datasets and exit")
    return parser


def resolve_names(parser, names, classes, check):
    if not names:
        if check:
            return sorted(classes)
        parser.error("name the datasets to prepare (or 'all'); known: " + ", ".join(sorted(classes)))
    if "all" in names:
        return sorted(classes)
    lookup = {name.lower(): name for name in classes}
    lookup.update({cls.__name__.lower(): name for name, cls in classes.items()})
    resolved = []
    for name in names:
        key = name.lower().replace("-", "_")
        if key not in lookup:
            close = difflib.get_close_matches(key, lookup, n=3)
            suggestions = list(dict.fromkeys(lookup[match] for match in close))
            hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
            parser.error(f"unknown dataset {name!r}.{hint} Known: {', '.join(sorted(classes))}")
        if lookup[key] not in resolved:
            resolved.append(lookup[key])
    return resolved


def describe_sources(name, cls, recipe, root):
    lines = [f"{name} ({cls.__name__}: {cls.dataset_dir}/)"]
    entries = [download for download, _ in module_files(cls, root)] + list(recipe.downloads)
    for download in entries:
        checksums = [f"{kind} {getattr(download, kind)}" for kind in ("md5", "sha256") if getattr(download, kind)]
        lines.append(f"  {download.name}: {' '.join(checksums) or 'no checksum (sha256 printed after download)'}")
        lines += [f"    from {browser_url(source)}" for source in download.sources] or ["    put in place by hand"]
        lines.append(f"    origin: {download.origin}")
    if recipe.manual:
        lines.append(f"  manual step: see the instructions printed by a run, or {DATASETS_DOC}")
    return "\n".join(lines)


def set_aside_broken(fetcher, download, path, err):
    """The one-line report of a damaged archive, once it is moved aside and its verification forgotten."""
    where = str(err) if err.path in (None, path) else f"{download.name}: {err}"
    try:
        aside = f"moved aside to {fetcher.set_aside(download, path)}"
    except OSError as move_error:
        aside = f"could not be moved aside ({move_error}): delete {path}"
    then = ("the next run downloads it again" if download.sources
            else f"put a good copy in {fetcher.downloads_dir} and run again")
    return f"{where}; {aside}; {then}"


def prepare_dataset(name, cls, recipe, root, args, gdrive=None, log=print):
    """Prepare one dataset; ``(layout report, [problem, ...])``."""
    hints = (ilsvrc.val_hint,) if recipe.custom == "ilsvrc" else ()
    report = check_layout(name, cls, root, recipe, hints)
    if report.ok and not args.force:
        log(f"{name}: already prepared ({report.found} images), skipped")
        return report, []
    folder = os.path.join(root, cls.dataset_dir)
    os.makedirs(folder, exist_ok=True)
    downloads_dir = os.path.join(args.downloads or os.path.join(root, "downloads"), cls.dataset_dir)
    progress = not args.no_progress
    limits = getattr(args, "limits", None)
    fetcher = Fetcher(downloads_dir, gdrive=gdrive, progress=progress, log=log)
    attributes = layout_attributes(cls)
    problems = []
    generic = () if recipe.custom else recipe.downloads
    for download, extra_dirs in module_files(cls, root) + [(download, ()) for download in generic]:
        if not args.force and is_placed(folder, download.name):
            continue
        try:
            path = fetcher.fetch(download, search_dirs=(folder,) + extra_dirs)
            if download.places:
                placed = place_archive(path, download.places, folder, attributes, progress, limits)
            else:
                copy_file(path, os.path.join(folder, download.target))
                placed = [download.target]
            mark_placed(folder, download.name, placed)
            if args.delete_archives and download.places:
                fetcher.discard(download, path)
        except BrokenArchiveError as err:
            problems.append(set_aside_broken(fetcher, download, path, err))
        except STEP_ERRORS as err:
            problems.append(f"{download.name}: {err}")
    if recipe.custom == "ilsvrc":
        problems += prepare_ilsvrc(cls, recipe, root, folder, fetcher, progress, log, limits)
    report = check_layout(name, cls, root, recipe, hints)
    for problem in problems:
        log(f"{name}: {problem}")
    if not report.ok and recipe.manual:
        log(f"\n{name} needs a manual step:\n" + recipe.manual.format(dataset_folder=folder, downloads=downloads_dir))
    return report, problems


def prepare_ilsvrc(cls, recipe, root, folder, fetcher, progress, log, limits=None):
    classnames = os.path.join(folder, "classnames.txt")
    if not os.path.isfile(classnames):
        return [f"{classnames} is missing, so the training classes cannot be checked"]
    reader = cls.layout_at(root)
    located = {}  # path -> Download, to name a damaged archive's entry

    def locate(download):
        try:
            path = fetcher.fetch(download, search_dirs=(folder,))
        except ManualFileNeeded:
            return None
        located[path] = download
        return path

    try:
        ilsvrc.prepare_imagenet(folder, reader.image_dir, cls.read_classnames(classnames), recipe.downloads, locate,
                                progress, log, limits)
    except BrokenArchiveError as err:
        if err.path not in located:
            return [str(err)]
        return [set_aside_broken(fetcher, located[err.path], err.path, err)]
    except STEP_ERRORS as err:
        return [str(err)]
    return []


def root_problem(root, writes):
    """What makes ``root`` unusable as the datasets folder (one line), or ``""``: a file, or, for a command that
    writes, a folder that cannot be created or written to (read-only, forbidden)."""
    if os.path.exists(root) and not os.path.isdir(root):
        return f"--root {root} is a file, not a folder: give the folder that holds (or will hold) the datasets."
    if not writes:
        return ""
    try:
        os.makedirs(root, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):  # the only sure test: permission bits say nothing of a read-only mount
            pass
    except OSError as err:
        inside = err.filename and os.path.dirname(os.path.abspath(err.filename)) == root  # our probe file
        where = f" ({err.filename})" if err.filename and err.filename != root and not inside else ""
        return (f"cannot write to --root {root}{where}: {err.strerror}. Preparing a dataset writes there: give a "
                "folder you can write to (--check only reads).")
    return ""


def main(argv=None, gdrive=None, sources=None, log=print):
    """The command line. ``gdrive`` (how Google Drive files are fetched) and ``sources`` (the source table)
    default to gdown and ``sources.SOURCES``; tests pass local ones."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.root:
        parser.error("give the datasets folder with --root (or set DATA)")
    root = os.path.abspath(os.path.expanduser(args.root))
    problem = root_problem(root, writes=not (args.check or args.list))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    sources = SOURCES if sources is None else sources
    classes = dataset_classes()
    try:
        args.limits = ExpansionLimits.from_env(args.max_expand_ratio, args.max_expand_size, members=args.max_members)
    except ValueError as err:
        parser.error(f"{err} (from --max-expand-ratio / --max-expand-size / --max-members or ${RATIO_ENV} / "
                     f"${SIZE_ENV} / ${MEMBERS_ENV})")
    names = resolve_names(parser, args.names, classes, args.check or args.list)
    unknown = [name for name in names if name not in sources]
    if unknown:
        parser.error(f"no entry for {', '.join(unknown)} in the source table (datasets/prepare/sources.py)")
    if args.list:
        log("\n\n".join(describe_sources(name, classes[name], sources[name], root) for name in names))
        return 0
    failures = []  # "dataset: problem", listed again at the end
    if args.check:
        hints = {name: (ilsvrc.val_hint,) if sources[name].custom == "ilsvrc" else () for name in names}
        reports = [check_layout(name, classes[name], root, sources[name], hints[name]) for name in names]
    else:
        os.makedirs(root, exist_ok=True)
        reports = []
        for name in names:
            report, problems = prepare_dataset(name, classes[name], sources[name], root, args, gdrive, log)
            reports.append(report)
            failures += [f"{name}: {problem}" for problem in problems]
    log("\n" + format_table(reports))
    if failures:
        log("\nFailed:\n" + "\n".join(f"  {failure}" for failure in failures))
    return 0 if all(report.ok for report in reports) and not failures else 1
