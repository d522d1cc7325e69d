"""The one config system of vqgen's command-line tools: a YAML (or JSON) recipe, then flags that
override it, parsed by transformers' `HfArgumentParser`.

    accelerate launch -m stage1_tokenizer.train recipes/fashion_mnist.yaml --max_steps 500 --model.quantizer vq-ema

A recipe's top level holds the run's options: the fields of the command's argument dataclasses
(`TrainingConfig`, the data arguments, ...), flags `--NAME`. Its `model:` mapping holds the fields
of the model's config class (`VQVAEConfig`, a prior's config, ...), flags `--model.NAME`. Each
field is declared once, on its dataclass or config class, with its type, default and help text,
which `--help` lists. Values are plain YAML: numbers, strings, lists and mappings; on the command
line a list or mapping is written in YAML or JSON (`--model.quantizer_options '{beta: 0.5}'`).
Unknown keys and flags are refused with the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, PreTrainedConfig

MODEL = "model"  # the recipe section, and the flags' prefix, of the model's config fields
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


# -- the model's config fields ---------------------------------------------------------------------
def config_fields(config_class: type[PreTrainedConfig]) -> list[dataclasses.Field]:
    """The fields a vqgen config class declares itself (not transformers' own, like id2label)."""
    inherited = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    return [f for f in dataclasses.fields(config_class) if f.name not in inherited]


def config_values(config: PreTrainedConfig) -> dict:
    """A config's own fields and their values (what defines the model, not where it was loaded from)."""
    return {f.name: getattr(config, f.name) for f in config_fields(type(config))}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _value_parser(annotation, name: str):
    """A flag's string -> a value of the field's type ("none"/"null" -> None for optional fields;
    lists and mappings in YAML or JSON)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) < len(typing.get_args(annotation))
    base = args[0] if optional and len(args) == 1 else annotation

    def parse(text: str):
        if optional and text.strip().lower() in ("none", "null", ""):
            return None
        if base is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "1"):
                return True
            if lowered in ("false", "no", "0"):
                return False
            raise ValueError(f"--{MODEL}.{name}: expected true or false, got {text!r}")
        if base in (int, float, str):
            return base(text)
        try:  # lists, mappings, unions: YAML (JSON is YAML)
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--{MODEL}.{name}: {text!r} is not valid YAML/JSON: {error}") from None

    parse.__name__ = getattr(base, "__name__", "value")  # what argparse names in its messages
    return parse


def _add_model_arguments(parser: HfArgumentParser, config_class, exclude: tuple[str, ...]) -> list[str]:
    group = parser.add_argument_group(
        f"{MODEL} (the fields of {config_class.__name__}; in a recipe, the `{MODEL}:` mapping)"
    )
    names = []
    for field in config_fields(config_class):
        if field.name in exclude:
            continue
        default = _default(field)
        help_text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %; it adds the default
        group.add_argument(
            f"--{MODEL}.{field.name}", dest=f"{MODEL}.{field.name}", type=_value_parser(field.type, field.name),
            default=default, metavar=field.name.upper(), help=help_text,
        )  # fmt: skip
        names.append(field.name)
    return names


# -- recipes ------------------------------------------------------------------------------------
def read_recipe(path: str | Path) -> dict:
    """A recipe file as a mapping; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found; the project's recipes are in recipes/.")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"recipe {path} is not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path} must be a mapping of option: value, got a {type(values).__name__}.")
    if MODEL in values and values[MODEL] is not None and not isinstance(values[MODEL], dict):
        raise ValueError(f"recipe {path}: `{MODEL}:` must be a mapping of config field: value, got {values[MODEL]!r}.")
    return values


def split_recipe(argv: list[str] | None) -> tuple[dict, list[str], str | None]:
    """(recipe values, the flags after it, the recipe's path) from a command line whose first
    argument may be a recipe file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(RECIPE_SUFFIXES):
        path = argv.pop(0)
        return read_recipe(path), argv, path
    return {}, argv, None


def peek_option(argv: list[str] | None, name: str, default: str) -> str:
    """The value of `--name` from the flags, else the recipe, else `default` (for an option that
    decides which other options exist, such as stage two's `--prior`)."""
    recipe, flags, _ = split_recipe(argv)
    value = recipe.get(name, default)
    for i, flag in enumerate(flags):
        if flag == f"--{name}" and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(f"--{name}="):
            value = flag.split("=", 1)[1]
    return str(value)


def _closest(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(sorted(known))}"


def _recipe_tokens(recipe: dict, known: set[str], model_fields: list[str], where: str) -> tuple[list[str], dict]:
    """Recipe values as flags (so that argparse converts and checks them like typed flags), plus
    the explicit nulls, which no flag can express, as defaults."""
    tokens, nulls = [], {}
    for key, value in recipe.items():
        if key == MODEL:
            for name, field_value in (value or {}).items():
                if name not in model_fields:
                    raise ValueError(f"{where}: `{MODEL}.{name}` is not a config field{_closest(name, model_fields)}")
                text = field_value if isinstance(field_value, str) else yaml.safe_dump(field_value, default_flow_style=True).strip()
                if text.endswith("\n...") or text.endswith(" ..."):
                    text = text.rsplit("...", 1)[0].strip()
                tokens += [f"--{MODEL}.{name}", text]
            continue
        if key not in known:
            raise ValueError(f"{where}: unknown option {key!r}{_closest(key, sorted(known))}")
        if value is None:
            nulls[key] = None
        elif isinstance(value, bool):
            tokens += [f"--{key}", str(value).lower()]
        elif isinstance(value, list):
            tokens += [f"--{key}", *map(str, value)]
        else:
            tokens += [f"--{key}", str(value)]
    return tokens, nulls


class _Parser(HfArgumentParser):
    """HfArgumentParser whose errors are ValueErrors (with the message), not an exit: the commands
    are also called as functions, from scripts and tests."""

    def error(self, message):
        raise ValueError(f"{self.prog}: {message}")


def parse_command(
    argv: list[str] | None,
    argument_classes: tuple[type, ...],
    config_class: type[PreTrainedConfig] | None = None,
    *,
    derived: tuple[str, ...] = (),
    description: str | None = None,
) -> tuple:
    """Parses a command line (optionally a recipe file first, then flags) into an instance of each
    dataclass of `argument_classes`, preceded, when `config_class` is given, by a dict of the
    model's config fields (all but `derived`, the fields the command fills in itself).

    Returns (model_fields, *arguments) with a config class, else (*arguments,)."""
    recipe, flags, path = split_recipe(argv)
    parser = _Parser(argument_classes, description=description, allow_abbrev=False)
    model_fields = _add_model_arguments(parser, config_class, derived) if config_class is not None else []
    known = {action.dest for action in parser._actions if not action.dest.startswith(f"{MODEL}.") and action.dest != "help"}
    if recipe and MODEL in recipe and config_class is None:
        raise ValueError(f"recipe {path}: this command takes no `{MODEL}:` section.")
    tokens, nulls = _recipe_tokens(recipe, known, model_fields, f"recipe {path}")
    if nulls:
        parser.set_defaults(**nulls)
        for action in parser._actions:  # a null in the recipe fills a required option too
            if action.dest in nulls:
                action.required = False
    namespace, unknown = parser.parse_known_args(tokens + flags)
    if unknown:
        flag = next((u for u in unknown if u.startswith("--")), unknown[0])
        options = [f"--{name}" for name in known] + [f"--{MODEL}.{name}" for name in model_fields]
        parser.error(f"unknown option {flag!r}{_closest(flag.split('=')[0], options)}")
    values = vars(namespace)
    arguments = []
    for dataclass_type in argument_classes:
        names = {f.name for f in dataclasses.fields(dataclass_type) if f.init}
        arguments.append(dataclass_type(**{k: values.pop(k) for k in list(values) if k in names}))
    if config_class is None:
        return tuple(arguments)
    model = {key.split(".", 1)[1]: value for key, value in values.items() if key.startswith(f"{MODEL}.")}
    return (model, *arguments)
