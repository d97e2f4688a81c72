"""The `lora-hyper` command line: `_parser` reads the options, `_commands` calls the library and prints.

Results go to stdout (an adapter folder, one answer per line, a JSON report), progress and errors
to stderr, so scripts can rely on both. Exit codes: 0 done, 1 failed (a missing or invalid file, an
adapter made for another base model, training that diverged, ...), 2 bad usage (unknown, missing or
out-of-range options, empty input, an --out that cannot be used), 75 preempted (`train` stopped by
SIGTERM; rerun the same command to resume). A failure is one line on stderr; a traceback comes only
with --debug (or LORA_HYPER_DEBUG=1), or for a bug in lora-hyper itself.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Sequence

from lora_hyper.cli._common import EXIT_ERROR, EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE, UsageError, log
from lora_hyper.cli._parser import build_parser
from lora_hyper.errors import LoraHyperError

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PREEMPTED", "EXIT_USAGE", "UsageError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  debug = args.debug or os.environ.get("LORA_HYPER_DEBUG", "") not in ("", "0")
  try:
    return args.run(args)
  except UsageError as e:
    log(f"error: {e}")
    return EXIT_USAGE
  except BrokenPipeError:
    # The reader of stdout went away (`| head`): stop quietly, and point stdout at /dev/null so the
    # interpreter's last flush does not fail again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_ERROR
  except (LoraHyperError, ValueError, OSError) as e:  # expected failures: bad files, wrong models, ...
    if debug:
      traceback.print_exc()
    log(f"error: {e}")
    return EXIT_ERROR
  except Exception:  # pylint: disable=broad-except  (anything else is a bug: keep its traceback)
    traceback.print_exc()
    log("internal error: this is a bug in lora-hyper; please report it with the traceback above")
    return EXIT_ERROR
