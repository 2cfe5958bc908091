"""Command line of the compendium.

``python -m uslib run --profile P``    pre-flight check, downloads, chapters, book
``python -m uslib check --profile P``  the pre-flight check alone (seconds; exit 1 if P cannot run here)
``python -m uslib fetch --profile P``  download what P lacks (data by SHA-256, weights by MD5)
``python -m uslib build --profile P``  build the book from the executed chapters of one run
``python -m uslib sweep --profile P --set svm_c=0.1,1,10``  a parameter sweep (:mod:`uslib.sweep`)
``python -m uslib serve``              serve the built book on http://127.0.0.1:8000/ (search works; :mod:`uslib.serve`)
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="uslib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the chapters with papermill and build the book")
    p_run.add_argument("--profile", default="params/default.yaml", help="profile name or YAML path")
    p_run.add_argument("--only", nargs="*", help="run only chapters starting with these prefixes, e.g. 05")
    p_run.add_argument("--no-build", action="store_true", help="execute the chapters, skip the book build")
    p_run.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="chapters run at once, each after the chapters it reads (default: up to 3, at most "
        "the CPU count, or $USLIB_JOBS; 1: one after another)",
    )
    p_build = sub.add_parser("build", help="build the book from the executed chapters of one run")
    p_build.add_argument("--profile", default="params/default.yaml")
    p_check = sub.add_parser("check", help="pre-flight check: data, weights, downloads, disk and time (no TensorFlow)")
    p_check.add_argument("--profile", default="params/default.yaml", help="profile name or YAML path")
    p_fetch = sub.add_parser("fetch", help="download what the profile lacks (data by SHA-256, weights by MD5)")
    p_fetch.add_argument("--profile", default="params/default.yaml", help="profile name or YAML path")
    p_sweep = sub.add_parser("sweep", help="run the affected chapters at every point of a parameter grid")
    p_sweep.add_argument("--profile", default="params/default.yaml", help="the parent profile")
    p_sweep.add_argument(
        "--set",
        dest="sets",
        action="append",
        required=True,
        metavar="NAME=V1,V2,...",
        help="a swept parameter and its values (YAML each); repeat for a grid",
    )
    p_serve = sub.add_parser("serve", help="serve the built book on 127.0.0.1 so that its search works")
    p_serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p_serve.add_argument("--dir", default=None, help="the HTML book (default: _build/html)")
    args = parser.parse_args(argv)

    from .config import ProfileError
    from .download import DownloadError
    from .run import BookError
    from .scheduler import SchedulerUnreachable
    from .store import DamagedRecord, RunDirectoryBusy, UnsafeLocation

    if getattr(args, "jobs", None) is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        return _dispatch(args)
    except (
        ProfileError,
        BookError,
        DamagedRecord,
        DownloadError,
        RunDirectoryBusy,
        UnsafeLocation,
        SchedulerUnreachable,
    ) as e:  # the user's to fix: one line, no traceback
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from . import run

    if args.command == "run":
        return run.main_run(args.profile, only=args.only, build=not args.no_build, jobs=args.jobs)
    if args.command == "build":
        return run.main_build(args.profile)
    if args.command == "check":
        return run.main_check(args.profile)
    if args.command == "fetch":
        from .check import fetch_missing
        from .config import load_profile

        for path in fetch_missing(load_profile(args.profile)):
            print(path)
        return run.main_check(args.profile)
    if args.command == "serve":
        from .serve import BOOK_HTML, serve

        try:
            return serve(args.dir or BOOK_HTML, port=args.port)
        except (FileNotFoundError, OSError) as e:
            print(f"uslib: error: {e}", file=sys.stderr)
            return 2
    if args.command == "sweep":
        from .sweep import run_sweep

        run_sweep(args.profile, args.sets)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
