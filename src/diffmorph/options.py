"""Every option of the commands, declared once, and what is built from the declarations.

A config option's flag, help, default, choices and group are :class:`~diffmorph.config.MorphConfig`'s field
metadata; the options that are not config fields are :data:`CLI_OPTIONS`, here, batch's manifest columns
among them (:data:`COLUMNS`). The commands' parsers
(:func:`add_options`), the README's options table (:func:`options_markdown`) and a run's config and formats
(:func:`config_from`, :func:`formats_from`) all come from them.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from diffmorph.config import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_PIXELS,
    GROUPS,
    RENDER_SETTINGS,
    MorphConfig,
    flag,
    shown_default,
)
from diffmorph.io.outputs import EXPORT_FORMATS

DEFAULTS = MorphConfig()
FIELDS = {item.name: item for item in dataclasses.fields(MorphConfig)}
EVERY = ("morph", "render", "demo", "batch")  # the commands that write a morph's outputs
# The help's groups beyond the config's: options of one command's own.
COMMAND_GROUPS = {"batch": "batch", "ui": "server", "eval": "measure"}


@dataclass(frozen=True)
class Option:
    """A command-line option that is not a config field.

    Attributes:
        flags: its flags, the long one last (its name).
        group: the help group it is shown in.
        help: what it does; the parser adds the default where there is one to show.
        shown: its default as the help and the README show it ("" for none).
        commands: the commands that take it.
        column: whether a batch manifest may set it per row (a column named as the flag).
        kwargs: how argparse reads it.
    """

    flags: tuple[str, ...]
    group: str
    help: str
    shown: str
    commands: tuple[str, ...]
    column: bool = False
    kwargs: dict[str, Any] = field(default_factory=lambda: {"action": "store_true"})

    @property
    def name(self) -> str:
        return self.flags[-1].lstrip("-").replace("-", "_")


def folder_name(value: str) -> Path:
    """``-o``'s value as a path; an empty one is a usage error."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the output folder is empty; give a folder, e.g. -o out")
    return Path(value)


def _number(kind: type, default: float, metavar: str) -> dict[str, Any]:
    return {"type": kind, "default": default, "metavar": metavar}


CLI_OPTIONS = (
    Option(("-o", "--output"), "input and output", "folder for the outputs (created if missing)", "", EVERY,
           kwargs={"required": True, "type": folder_name, "metavar": "OUTDIR"}),
    Option(("--format",), "input and output", f"outputs to write, any of {' '.join(EXPORT_FORMATS)} (flow: the "
           "correspondence as .npy, .flo and a picture), space- or comma-separated", " ".join(DEFAULT_FORMATS),
           EVERY, column=True, kwargs={"action": "extend", "nargs": "+", "metavar": "FORMAT", "default": None}),
    Option(("--loop",), "input and output", "add a segment from the last image back to the first", "",
           ("morph", "batch"), column=True),
    Option(("--pingpong",), "input and output", "play forward, then backward", "", EVERY, column=True),
    Option(("--max-pixels",), "input and output", "refuse larger inputs (decompression-bomb guard)",
           f"{DEFAULT_MAX_PIXELS:,}", ("morph", "batch", "ui"), kwargs=_number(int, DEFAULT_MAX_PIXELS, "N")),
    Option(("-q", "--quiet"), "input and output", "print nothing but errors", "", EVERY),
    Option(("--mask-a",), "start", "a picture of A's size whose white part is a region the fit honours (see "
           "--mask-mode); a pair only", "", ("morph",), kwargs={"type": Path, "metavar": "PNG"}),
    Option(("--mask-b",), "start", "the same for B; an image without a mask takes the other's", "", ("morph",),
           kwargs={"type": Path, "metavar": "PNG"}),
    Option(("--points",), "start", "point hints: a CSV with the header ax,ay,bx,by, one pair a line, each point in "
           "its own image's pixels; the warp carries each point on A onto its partner on B. A chain takes a file "
           "per segment", "", ("morph",), kwargs={"type": Path, "nargs": "+", "metavar": "CSV"}),
    Option(("--mask-mode",), "start", "what the masked region is: keep (it stays still and crossfades) or subject "
           "(it corresponds; the rest crossfades unwarped)", "keep", ("morph",),
           kwargs={"choices": ("keep", "subject"), "default": None}),
    Option(("--address",), "batch", "a Ray cluster to join (auto, ray://host:10001); by default RAY_ADDRESS, or a "
           "private local Ray", "", ("batch",), kwargs={"default": None}),
    Option(("--cpus-per-job",), "batch", "CPUs per row", "1", ("batch",), kwargs=_number(float, 1.0, "N")),
    Option(("--gpus-per-job",), "batch", "GPUs per row, fractions allowed", "0", ("batch",),
           kwargs=_number(float, 0.0, "F")),
    Option(("--retries",), "batch", "tries again of a row whose worker died", "2", ("batch",),
           kwargs=_number(int, 2, "N")),
    Option(("--force",), "batch", "redo rows whose folders are already complete", "", ("batch",)),
    Option(("--host",), "server", "address to bind", "127.0.0.1, this machine only", ("ui",),
           kwargs={"default": "127.0.0.1"}),
    Option(("--port",), "server", "port", "7860", ("ui",), kwargs={"type": int, "default": 7860}),
    Option(("--max-upload-mb",), "server", "largest upload", "50", ("ui",), kwargs=_number(float, 50.0, "MB")),
    Option(("--max-disk-gb",), "server", "the visitors' files together; past it the longest idle go first", "4",
           ("ui",), kwargs=_number(float, 4.0, "GB")),
    Option(("--verbose",), "server", "log each visitor's error with its traceback, not only its one line", "",
           ("ui",)),
    Option(("--maps",), "measure", "maps file, for the fidelity metrics", "", ("eval",),
           kwargs={"type": Path, "metavar": "MAPSFILE"}),
    Option(("--json",), "measure", "print the metrics as JSON", "", ("eval",)),
)
POSITIONALS = {  # each command's positional arguments: (name, help, argparse's reading)
    "morph": (("images", "two or more images, morphed in order (the first sets the output size)",
               {"type": Path, "nargs": "+", "metavar": "IMAGE"}),),
    "render": (("maps_file", "maps.safetensors from diffmorph morph", {"type": Path, "metavar": "MAPSFILE"}),),
    "eval": (("animation", "morph.mp4, morph.gif or frames/", {"type": Path, "metavar": "ANIMATION"}),
             ("source", "first image", {"type": Path, "metavar": "A"}),
             ("target", "last image", {"type": Path, "metavar": "B"})),
    "batch": (("manifest", "the rows, .csv or .jsonl", {"type": Path, "metavar": "MANIFEST"}),),
}
COLUMNS = tuple(option.name for option in CLI_OPTIONS if option.column)


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, its description and the config fields it takes as options."""

    name: str
    help: str
    description: str
    fields: tuple[str, ...]
    quiet: bool | None = None  # for a command without --quiet: whether it logs


_EVERY_FIELD = tuple(FIELDS)
COMMANDS = (
    Command("morph", "fit and render a morph of two or more images",
            "Fit the maps that turn each image into the next and write the morph into OUTDIR: the animations, "
            "maps.safetensors, contact_sheet.png and config.json; for two images also a_to_b.png, b_to_a.png "
            "and maps.png.", _EVERY_FIELD),
    Command("render", "re-render a maps file without fitting again",
            "Render the morph stored in MAPSFILE (from diffmorph morph) again, with other frames, timing, size or "
            "formats.", (*RENDER_SETTINGS, "device")),
    Command("demo", "morph a built-in pair of images drawn in code",
            "Morph a built-in sunset into a night sky (drawn in code, nothing downloaded) and write every output "
            "into OUTDIR.", tuple(name for name in FIELDS if name not in ("fit", "background"))),
    Command("eval", "measure a morph: endpoints, mid-frame detail, pacing, fidelity",
            "Measure a morph from its frames (a video, an animated GIF or WebP, or a folder of frames) and the two "
            "images it was made from.", ("fit", "background"), quiet=True),
    Command("batch", "morph every row of a manifest on Ray, locally or on a cluster",
            "Morph every row of MANIFEST (CSV with name, image_1, image_2, ... and options named as morph's; or "
            "JSON Lines with name and images) into OUTDIR/<name>/, on Ray. Rows whose folder is complete are "
            "skipped; OUTDIR/batch.jsonl records every row. The options below are every row's defaults.",
            _EVERY_FIELD),
    Command("ui", "serve a page in the browser to morph, re-render and download",
            "Serve diffmorph's web page (Gradio; pip extra diffmorph[ui]) and print its URL. It binds to "
            "127.0.0.1 unless --host says otherwise.", ("device",), quiet=False),
)  # a manifest's columns beyond the config's


class Parser(argparse.ArgumentParser):
    """argparse's parser, its usage errors ending with where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_options(parser: argparse.ArgumentParser, command: str, names: Sequence[str]) -> None:
    """The command's options, in :data:`~diffmorph.config.GROUPS` and its own group: config fields ``names``
    and its :data:`CLI_OPTIONS`."""
    own = COMMAND_GROUPS.get(command)
    groups = {name: parser.add_argument_group(f"{name} options") for name in (*GROUPS, *([own] if own else []))}
    for option in CLI_OPTIONS:
        if command in option.commands:
            text = f"{option.help} (default: {option.shown})" if option.shown else option.help
            groups[option.group].add_argument(*option.flags, help=text, **option.kwargs)
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


def build_parser(description: str, version: str, handlers: dict[str, Callable[..., int]]) -> argparse.ArgumentParser:
    """The whole command line: every command of :data:`COMMANDS` with its arguments and options, each bound to
    its handler in ``handlers``."""
    parser = Parser(prog="diffmorph", description=description)
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        for name, text, kwargs in POSITIONALS.get(command.name, ()):
            sub.add_argument(name, help=text, **kwargs)
        add_options(sub, command.name, command.fields)
        sub.set_defaults(handler=handlers[command.name],
                         **({} if command.quiet is None else {"quiet": command.quiet}))
    return parser


def options_markdown() -> str:
    """The README's options table: every option of ``diffmorph morph``, grouped as its help groups them."""
    rows = ["| group | flag | default | meaning |", "|---|---|---|---|"]
    for group in GROUPS:
        for option in CLI_OPTIONS:
            if option.group == group and "morph" in option.commands:
                shown = option.shown or ("off" if option.kwargs.get("action") == "store_true" else "—")
                rows.append(f"| {group} | `{', '.join(option.flags)}` | {shown} | {option.help} |")
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
    from diffmorph.io.outputs import check_formats

    if args.format is None:
        return DEFAULT_FORMATS
    return check_formats([part for item in args.format for part in item.split(",") if part])
