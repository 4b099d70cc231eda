"""The ``kerasave`` command line (also ``python -m kerasave``).

Commands: ``demo``, ``inspect``, ``verify``, ``diff``, ``convert`` and ``doctor``
(one module each; see ``docs/cli.md``). Exit codes: 0 yes / done, 1 the answer
is no (verification failed, artifacts differ, a round trip failed), 2 the
command could not run (usage, missing or unreadable input). Errors are one line
on stderr, ``kerasave: error: ...``; ``--debug`` adds the traceback.

The commands use kerasave's public API: they read every artifact through
``kerasave.open`` and the public loads given the open ``Artifact``
(``kerasave.cli._artifacts``), by the names ``inspect`` shows, or by model names
that line up across formats.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import click  # noqa: E402

from kerasave._errors import KerasaveError  # noqa: E402
from kerasave._runtime.version import __version__  # noqa: E402
from kerasave.cli._ui import ERROR, NO, OK, No, State, one_line  # noqa: E402
from kerasave.cli.convert import convert_command  # noqa: E402
from kerasave.cli.demo import demo  # noqa: E402
from kerasave.cli.diff import diff_command  # noqa: E402
from kerasave.cli.doctor import doctor  # noqa: E402
from kerasave.cli.inspect import inspect_command  # noqa: E402
from kerasave.cli.verify import verify_command  # noqa: E402

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="kerasave",
                      message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="On an error, show the full traceback.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Save, restore and prove Keras models in every classic TensorFlow format.

    Exit codes: 0 yes/done, 1 no (verification failed, artifacts differ), 2 error.
    """
    if isinstance(ctx.obj, State):
        ctx.obj.debug = debug


for _command in (demo, inspect_command, doctor, verify_command, diff_command, convert_command):
    cli.add_command(_command)


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    seen = Counter[str]()
    for w in caught:
        if not issubclass(w.category, UserWarning):
            continue
        text = one_line(str(w.message))
        if not seen[text]:
            click.echo(f"kerasave: warning: {text}", err=True)
        seen[text] += 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    state = State()
    args = list(sys.argv[1:] if argv is None else argv)
    if sys.stderr.isatty():  # object-store transfers draw a bar
        from kerasave.cli._ui import transfer_bar
        from kerasave.store import objectstore

        objectstore.progress = transfer_bar
    error: BaseException | None
    message, code, error = None, OK, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = cli.main(args, prog_name="kerasave", standalone_mode=False, obj=state)
            code = int(result) if isinstance(result, int) else OK
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help(), err=True)
            code = ERROR
        except click.ClickException as exc:
            message, code = exc.format_message(), exc.exit_code
            if isinstance(exc, click.UsageError):
                message += " (see kerasave --help)"
        except click.exceptions.Abort:
            message, code = "aborted", 130
        except KeyboardInterrupt as exc:
            message, code, error = "interrupted", 130, exc
        except No as exc:
            message, code, error = str(exc), NO, exc
        except KerasaveError as exc:
            message, code, error = str(exc), ERROR, exc
        except Exception as exc:
            message, code, error = f"{type(exc).__name__}: {exc}", ERROR, exc
    _show_warnings(caught)
    if error is not None and state.debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if message is not None:
        hint = "" if state.debug or error is None or isinstance(error, (No, KerasaveError)) \
            else " (run with --debug for the traceback)"
        click.echo(f"kerasave: error: {one_line(message)}{hint}", err=True)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
