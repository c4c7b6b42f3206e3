"""`python -m diffc`: the command line.

    python -m diffc cache info     the cache folder, whether it is used, its entries and size
    python -m diffc cache clear    remove every entry (only diffc's files: nothing else there)

Exit status 0, or 1 with a message on stderr when the folder may not be touched (it is not
the user's alone). Needs numpy only (no llvmlite).
"""
from __future__ import annotations

import argparse
import sys

from .core.errors import DiffcError
from .runtime import cache


def megabytes(size: int) -> str:
    return f"{size / 2 ** 20:.1f} MB"


def show_info() -> None:
    state = cache.info()
    print(f"folder:   {state.folder}")
    print(f"in use:   {'yes' if state.problem is None else 'no: ' + state.problem}")
    print(f"entries:  {state.entries}")
    print(f"size:     {megabytes(state.size)} of at most {megabytes(state.max_bytes)} "
          f"(DIFFC_CACHE_MAX_MB; the least recently used entries go first)")


def clear() -> None:
    removed, size = cache.clear()
    print(f"removed {removed} entries ({megabytes(size)}) from {cache.directory()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffc", description="diffc's command line")
    commands = parser.add_subparsers(dest="command", required=True)
    cache_parser = commands.add_parser("cache", help="the on-disk cache of compiled code",
                                       description="the on-disk cache of compiled code "
                                                   "(DIFFC_CACHE_DIR, default ~/.cache/diffc)")
    cache_parser.add_argument("action", choices=["info", "clear"],
                              help="info: folder, entries, size; clear: remove every entry")
    args = parser.parse_args(argv)
    try:
        show_info() if args.action == "info" else clear()
    except DiffcError as e:
        print(f"python -m diffc cache {args.action}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
