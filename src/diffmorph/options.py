"""Every option of the commands, declared once, and what is built from the declarations.

A config option's flag, help, default, choices and group are :class:`~diffmorph.config.MorphConfig`'s field
metadata; the few options that are not config fields are :data:`CLI_OPTIONS`, here. The commands' parsers
(:func:`add_options`), the README's options table (:func:`options_markdown`) and a run's config and formats
(:func:`config_from`, :func:`formats_from`) all come from them.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from diffmorph.config import DEFAULT_FORMATS, DEFAULT_MAX_PIXELS, GROUPS, MorphConfig, flag, shown_default
from diffmorph.io.outputs import EXPORT_FORMATS

DEFAULTS = MorphConfig()
FIELDS = {item.name: item for item in dataclasses.fields(MorphConfig)}
# Options that are not config fields: (flags, group, help, default as shown, which commands take them).
CLI_OPTIONS = (
    (("-o", "--output"), "input and output", "folder for the outputs (created if missing)", "—",
     ("morph", "render", "demo", "batch")),
    (("--format",), "input and output", f"outputs to write, any of {' '.join(EXPORT_FORMATS)} (flow: the "
     "correspondence as .npy, .flo and a picture), space- or comma-separated", " ".join(DEFAULT_FORMATS),
     ("morph", "render", "demo", "batch")),
    (("--loop",), "input and output", "add a segment from the last image back to the first", "off",
     ("morph", "batch")),
    (("--pingpong",), "input and output", "play forward, then backward", "off", ("morph", "render", "demo", "batch")),
    (("--max-pixels",), "input and output", "refuse larger inputs (decompression-bomb guard)",
     f"{DEFAULT_MAX_PIXELS:,}", ("morph", "batch")),
    (("-q", "--quiet"), "input and output", "print nothing but errors", "off", ("morph", "render", "demo", "batch")),
)


def folder_name(value: str) -> Path:
    """``-o``'s value as a path; an empty one is a usage error."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the output folder is empty; give a folder, e.g. -o out")
    return Path(value)


class Parser(argparse.ArgumentParser):
    """argparse's parser, its usage errors ending with where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_options(parser: argparse.ArgumentParser, command: str, names: Sequence[str]) -> None:
    """The command's options, in :data:`~diffmorph.config.GROUPS`: config fields ``names`` and its CLI options."""
    groups = {name: parser.add_argument_group(f"{name} options") for name in GROUPS}
    for flags, group, text, _, commands in CLI_OPTIONS:
        if command not in commands:
            continue
        target = groups[group]
        if flags[-1] == "--output":
            target.add_argument(*flags, required=True, type=folder_name, metavar="OUTDIR", help=text)
        elif flags[-1] == "--format":
            target.add_argument(*flags, action="extend", nargs="+", metavar="FORMAT", default=None, help=text)
        elif flags[-1] == "--max-pixels":
            target.add_argument(*flags, type=int, default=DEFAULT_MAX_PIXELS, metavar="N", help=text)
        else:
            target.add_argument(*flags, action="store_true", help=text)
    for name in names:
        item = FIELDS[name]
        target = groups[item.metadata["group"]]
        text = f"{item.metadata['help']} (default: {shown_default(item)})"
        choices = item.metadata["choices"]
        if item.type == "bool":
            target.add_argument(flag(name), action="store_true", default=None, help=text)
        elif name == "durations":
            target.add_argument(flag(name), type=float, nargs="+", default=None, metavar="SECONDS", help=text)
        elif choices:
            target.add_argument(flag(name), choices=choices, default=None, help=text)
        else:
            convert = {"int": int, "float": float, "float | None": float, "str": str}[item.type]
            target.add_argument(flag(name), type=convert, default=None, metavar=name.split("_")[0].upper(), help=text)
    for group in groups.values():  # argparse shows empty groups' titles too
        if not group._group_actions:
            parser._action_groups.remove(group)


def options_markdown() -> str:
    """The README's options table: every option of ``diffmorph morph``, grouped as its help groups them."""
    rows = ["| group | flag | default | meaning |", "|---|---|---|---|"]
    for group in GROUPS:
        for flags, where, text, shown, _ in CLI_OPTIONS:
            if where == group:
                rows.append(f"| {group} | `{', '.join(flags)}` | {shown} | {text} |")
        for item in dataclasses.fields(MorphConfig):
            if item.metadata["group"] == group:
                choices, expected = item.metadata["choices"], item.metadata["expected"]
                meaning = item.metadata["help"] + (f" (one of: {', '.join(choices)})" if choices else "")
                meaning += f"; {expected}" if expected else ""
                rows.append(f"| {group} | `{flag(item.name)}` | {shown_default(item)} | {meaning} |")
    return "\n".join(rows)


def config_from(args: argparse.Namespace, base: MorphConfig = DEFAULTS) -> MorphConfig:
    changes = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    return dataclasses.replace(base, **changes).validate()


def formats_from(args: argparse.Namespace) -> tuple[str, ...]:
    from diffmorph.export import check_formats

    if args.format is None:
        return DEFAULT_FORMATS
    return check_formats([part for item in args.format for part in item.split(",") if part])
