"""The `napari-sam2` command line.

Each subcommand group has an `_add_<group>_commands(subparsers)` function that builds its parsers
and binds each one to a handler through `set_defaults(handler=...)`; a handler takes the parsed
arguments and returns the exit status. Exit status: 0 ok, 2 bad usage or input (one line on
stderr), 1 any other failure.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from . import __version__, models
from .errors import InputError, Sam2Error

PROG = "napari-sam2"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _error(message: str) -> None:
    # One line, like argparse's own errors, so scripts can show or grep it.
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


# ---------------------------------------------------------------- models


def _models_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "CONFIG", "PARAMS", "CACHED", "PATH")]
    for info in models.MODELS.values():
        path = models.cached_path(info.name)
        rows.append((info.name, info.config_name, f"{info.params_m:g}M", "yes" if path.is_file() else "no", str(path)))
    for name, path in sorted(models.local_models().items()):
        rows.append((name, "-", "-", "local" if path.is_file() else "missing", str(path)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK


def _models_download(args: argparse.Namespace) -> int:
    if args.url and len(args.names) > 1:
        raise InputError("--url names one file: download one model at a time with it.")
    for name in args.names:
        info = models.resolve_name(name)
        if models.cached_path(info.name).is_file() and not args.force:
            print(f"{info.name}: already downloaded (use --force to fetch it again)", file=sys.stderr)
        bar = models.TextProgressBar(info.name)
        try:
            path = models.download(info.name, progress=bar, force=args.force, url=args.url)
        finally:
            bar.close()
        print(path)
    return EXIT_OK


def _models_path(args: argparse.Namespace) -> int:
    print(models.model_path(args.name, download=False))
    return EXIT_OK


def _models_register(args: argparse.Namespace) -> int:
    path = models.register_local(args.name, args.path)
    print(f"registered {args.name}: {path}")
    return EXIT_OK


def _add_models_commands(subparsers) -> None:
    group = subparsers.add_parser(
        "models",
        help="list, download and locate SAM2 checkpoints",
        description=f"Official checkpoints are cached in {models.cache_dir()} (set NAPARI_SAM2_CACHE to change it).",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the official and registered models, and whether they are downloaded")
    listing.set_defaults(handler=_models_list)

    fetch = actions.add_parser("download", help="download official checkpoints into the cache")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="e.g. sam2.1_hiera_tiny, sam2.1_hiera_b+ or large")
    fetch.add_argument("--force", action="store_true", help="download again even if the file is cached")
    fetch.add_argument("--url", help="fetch from this URL (a mirror) instead of the official one")
    fetch.set_defaults(handler=_models_download)

    where = actions.add_parser("path", help="print the checkpoint file of a model (never downloads)")
    where.add_argument("name", metavar="NAME", help="an official or registered model name")
    where.set_defaults(handler=_models_path)

    register = actions.add_parser("register", help="use an existing local checkpoint file under a name")
    register.add_argument("name", metavar="NAME")
    register.add_argument("path", metavar="PATH", help="the .pt file")
    register.set_defaults(handler=_models_register)


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SAM2 / SAM2.1 segmentation from the command line.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_models_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.handler(args)
    except Sam2Error as exc:  # the message says what to do; a traceback would only hide it
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except OSError as exc:
        _error(f"{exc}")
        return EXIT_FAILURE
    except Exception:
        traceback.print_exc()
        _error("unexpected failure (see the traceback above); please report it")
        return EXIT_FAILURE
