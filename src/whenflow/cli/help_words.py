"""`--help` in the user's words, not Python's.

Typer shows each parameter's Python annotation (`<list[str]>`, `<bool>`,
`<Path>`); a user of the command line needs the word they type instead
(`NAME=VALUE`, `SECONDS`). Every option declares its `metavar`; flags show
nothing; an argument's name already says what it is. The command and group
classes below apply that to every parameter help lists, `--help` included.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup, TyperOption


def _user_words(param: Any) -> Any:
    """The text of a parameter's type column: its metavar, or nothing."""

    def display_type_rich(ctx: Any = None) -> str:
        if isinstance(param, TyperOption) and not param.is_flag:
            return str(param.metavar or "")
        return ""

    return display_type_rich


def _usage_words(param: Any) -> Any:
    """An argument in the usage line: `NAME`, or `[NAME]` when it is optional."""

    def usage_display_name() -> str:
        name = str(param.metavar or param.name).upper()
        return name if param.required else f"[{name}]"

    return usage_display_name


def _in_user_words(params: list[Any]) -> list[Any]:
    for param in params:
        # Typer renders the type column through these methods of each parameter
        # (and an argument's usage-line name through the last one).
        setattr(param, "display_type_rich", _user_words(param))  # noqa: B010
        setattr(param, "display_type", _user_words(param))  # noqa: B010
        if not isinstance(param, TyperOption):
            setattr(param, "_usage_display_name", _usage_words(param))  # noqa: B010
    return params


class WhenflowCommand(TyperCommand):
    """A command whose help shows metavars instead of Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _in_user_words(super().get_params(ctx))


class WhenflowGroup(TyperGroup):
    """A group whose help shows metavars instead of Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _in_user_words(super().get_params(ctx))
