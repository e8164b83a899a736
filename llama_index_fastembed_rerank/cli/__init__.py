"""The ``llama-index-fastembed-rerank`` command: ingest files, query them, move models around.

Every failure it can foresee ends in one ``error:`` line on stderr and exit status 2, before
anything is written. Exit status 1 means an ingest skipped files it could not read (each
reported) and ingested the rest; 130 an interrupt (run the same command again to finish).
Warnings are one line each, and texts a model truncated are counted once, at the end.

``parser`` holds the arguments and imports nothing heavy, so that ``--help`` is instant;
``commands`` runs them, importing the models and Qdrant only then; ``output`` prints.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from .output import one_line, quiet_libraries, say, say_truncations
from .parser import parser


class CommandError(Exception):
    """A failure the command foresaw: printed as one ``error:`` line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parser().parse_args(argv)
    quiet_libraries()
    try:
        commands = importlib.import_module(".commands", __name__)
        return int(getattr(commands, args.run)(args))
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, ValueError, OSError, ImportError) as e:
        say(f"error: {one_line(e)}")
        return 2
    except Exception as e:
        # A Qdrant server's refusal (ApiException: a 403 for a read-only key, a 409 from a
        # concurrent create, a timeout) is a failure to report, not a bug to trace.
        if not type(e).__module__.startswith("qdrant_client"):
            raise
        say(f"error: Qdrant: {one_line(e)}")
        return 2
    except KeyboardInterrupt:
        say("interrupted: run the same command again to finish")
        return 130
    finally:
        say_truncations()
