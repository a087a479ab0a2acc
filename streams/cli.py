"""The `hitrun` command line: hitrun's own commands; Faust runs underneath `hitrun worker`.

Every command's module is imported only when the command runs, so `--help`
answers at once, reads no setting and touches no broker. Expected failures
print one or two lines and exit with a documented code (EXIT_* below);
`hitrun --debug COMMAND` shows the traceback as well.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

# Exit codes (README, "Command line").
EXIT_FAILED = 1  # the command ran and reports a failure (e.g. a replay's dead letters)
EXIT_USAGE = 2  # a bad option, argument or HITRUN_* setting
EXIT_UNREACHABLE = 3  # the broker did not answer within HITRUN_CONNECT_TIMEOUT
EXIT_TOPICS = 4  # a topic is missing, has the wrong layout, or may not be used
EXIT_INTERRUPTED = 130  # Ctrl-C

# name -> (module of hitrun.streams, attribute, one-line help). The help is here so
# that `hitrun --help` imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "worker": ("worker_command", "worker", "Run a worker: detect and publish alerts."),
    "replay": ("replay_command", "replay_command", "Replay a transactions file and count alerts."),
    "produce": ("clients", "produce", "Publish a JSON-lines file of shop events."),
    "tail": ("clients", "tail", "Follow the alert topics and print the alerts."),
    "blacklist": ("clients", "blacklist", "Print who is blacklisted now."),
    "simulate": ("simulate_command", "simulate", "Publish realistic shop traffic."),
    "topics": ("simulate_command", "topics", "Create hitrun's topics and check them."),
    "admin": ("admin_cli", "admin", "Sign an admin command and send it."),
    "token": ("admin_cli", "token", "Make a named HTTP token with a role."),
    "why": ("why_command", "why", "Show why a customer stands where they stand."),
    "faust": ("worker_command", "faust", "Run one of Faust's own commands."),
}


def _version() -> str:
    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "unknown"

    return (
        f"hitrun {of('hitrun')}\n"
        f"faust-streaming {of('faust-streaming')}, aiokafka {of('aiokafka')}, "
        f"Python {sys.version.split()[0]}"
    )


class HitrunCommands(click.Group):
    """Loads each command when it is used, and turns expected failures into exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = COMMANDS.get(name)
        if found is None:
            return None
        module, attribute, _ = found
        loaded = importlib.import_module(f"hitrun.streams.{module}")
        command: click.Command = getattr(loaded, attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_m, _a, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("hitrun: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            code = expected_failure(exc)
            if code is None or ctx.obj.get("debug"):
                raise
            click.echo(f"hitrun: {exc}", err=True)
            ctx.exit(code)


def expected_failure(exc: BaseException) -> int | None:
    """The exit code of a failure a person can act on, or None for a bug (a traceback)."""
    from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

    from hitrun.streams.config import SettingsError
    from hitrun.streams.kafka_auth import BrokerUnreachable
    from hitrun.streams.topics import TopicLayoutError

    if isinstance(exc, SettingsError):
        return EXIT_USAGE
    if isinstance(exc, BrokerUnreachable | KafkaConnectionError):
        return EXIT_UNREACHABLE
    if isinstance(exc, TopicLayoutError | TopicAuthorizationFailedError):
        return EXIT_TOPICS
    return None


@click.group(cls=HitrunCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(message="%(version)s", version=_version())
@click.option("--debug", is_flag=True, help="Show the traceback of any failure.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """hitrun: real-time detection of hit-and-run customers on Kafka.

    Settings come from HITRUN_* environment variables (README, "Configuration").
    """
    ctx.obj = {"debug": debug}
    if ctx.invoked_subcommand not in ("worker", "faust") and not debug:
        # aiokafka logs every refused connection; a tool says it once, when it gives up.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def main() -> None:
    """Entry point of the `hitrun` console script."""
    cli(prog_name="hitrun")


if __name__ == "__main__":
    main()
