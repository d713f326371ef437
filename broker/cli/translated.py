"""Click commands whose help is translated as it is printed (broker.cli.i18n), not when the module loads.

Click builds help from the strings the decorators were given at import, before ``--lang`` or the
environment of one run is known; these classes translate each of them (the command's text, each
option's help, the section headings) at the moment help is formatted.
"""

from __future__ import annotations

import inspect
import re

import click

from broker.cli.i18n import _


def help_text(text: str) -> str:
    """A help text (a docstring, an option's help) in the language in force; its msgid is the cleaned text."""
    return _(inspect.cleandoc(text)) if text else text


class TranslatedCommand(click.Command):
    """A command whose help, options' help and headings are printed in the language in force."""

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, " ".join(self.collect_usage_pieces(ctx)), _("Usage: "))

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated(self, "help"):
            super().format_help_text(ctx, formatter)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated(self, "epilog"):
            super().format_epilog(ctx, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        """The first sentence of the translated help, cut at ``limit`` (click's own cut needs spaces between
        words, which Chinese does not have)."""
        text = help_text(self.short_help or self.help or "").split("\n\n")[0].replace("\n", " ")
        if text.isascii():  # English: click's own cut, at a word
            with _translated(self, "help"), _translated(self, "short_help"):
                return super().get_short_help_str(limit)
        first = re.split(r"(?<=[.。])\s*", text, maxsplit=1)[0].rstrip(".")
        return first if len(first) <= limit else first[:limit - 1] + "…"

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = []
        for param in self.get_params(ctx):
            with _translated(param, "help"):
                record = param.get_help_record(ctx)
            if record is not None:
                records.append(record)
        if records:
            with formatter.section(_("Options")):
                formatter.write_dl(records)


class TranslatedGroup(TranslatedCommand, click.Group):
    """A group of translated commands; its subcommands and subgroups are translated too."""

    command_class = TranslatedCommand
    group_class = type  # subgroups made with @group.group() are TranslatedGroup, as click documents

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        TranslatedCommand.format_options(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section(_("Commands")):
                formatter.write_dl(rows)


class _translated:
    """Within the block, ``thing.attribute`` holds its translation; restored after."""

    def __init__(self, thing: object, attribute: str) -> None:
        self.thing, self.attribute = thing, attribute

    def __enter__(self) -> None:
        self.original = getattr(self.thing, self.attribute, None)
        if isinstance(self.original, str) and self.original:
            setattr(self.thing, self.attribute, help_text(self.original))

    def __exit__(self, *exc: object) -> None:
        setattr(self.thing, self.attribute, self.original)
