"""Recipes: a published setup as a TOML file of settings, one table per config section.

    # recipes/exemplar_vae.toml
    [model]
    activation = "gated"
    hidden_units = [300, 300]
    [train]
    learning_rate = 5e-4

The keys are the settings' names (`keras_cvae.config`, the flags without their dashes, `_` for
`-`). `load_recipe(path)` reads and checks one: an unreadable file, bad TOML, an unknown table or
key, or a value of the wrong kind is a ConfigError naming the file. `Recipe.config()` is the
RunConfig it describes; on the command line `--recipe FILE` comes between the defaults and the
flags (`keras-cvae train --recipe recipes/NAME.toml --epochs 5`). A run records the recipe's name
and content in its config.json (`RunConfig.recipe`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_cvae.config import SECTIONS, ConfigError, RunConfig, Setting, settings


@dataclass(frozen=True)
class Recipe:
    """A recipe file read and checked: its `name` (the file's stem), its `content` as written and
    the `values` it sets, as (setting, value) pairs in file order."""

    name: str
    content: dict[str, dict[str, Any]]
    values: tuple[tuple[Setting, Any], ...]

    def record(self) -> dict[str, Any]:
        """What a run's config.json keeps of it."""
        return {"name": self.name, "content": self.content}

    def config(self) -> RunConfig:
        """train.py's defaults with this recipe's settings, recorded in `RunConfig.recipe`."""
        config = RunConfig()
        for item, value in self.values:
            config.set(item, value)
        config.recipe = self.record()
        return config


def load_recipe(path: str | Path) -> Recipe:
    """The recipe at `path`, checked (module docstring)."""
    path = Path(path)
    try:
        content = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read recipe {path}: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"recipe {path} is not valid TOML: {err}") from err
    declared = {(item.section, item.name): item for item in settings()}
    values = []
    for section, table in content.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"recipe {path}: unknown table [{section}]; the tables are "
                              f"{', '.join(f'[{name}]' for name in SECTIONS)}")
        for key, value in table.items():
            item = declared.get((section, key))
            if item is None:
                raise ConfigError(f"recipe {path}: [{section}] has no setting {key!r}")
            values.append((item, _value(item, value, path)))
    return Recipe(path.stem, content, tuple(values))


def _value(item: Setting, value: Any, path: Path) -> Any:
    """A TOML value as the setting's: an int, float or string setting takes a value of its type
    (an integer may stand for a float); a setting with its own parser (hidden units, image size,
    …) takes the flag's text or a list, made a tuple."""
    where = f"recipe {path}: [{item.section}] {item.name}"
    if item.switch is not None:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{where} must not be true or false, got {value!r}")
    if item.parse is float and isinstance(value, int):
        return float(value)
    if item.parse in (int, float, str):
        if not isinstance(value, item.parse):
            kind = "a string" if item.parse is str else f"a number ({item.parse.__name__})"
            raise ConfigError(f"{where} must be {kind}, got {value!r}")
        return value
    if isinstance(value, str):  # a setting with its own parser: the flag's text
        try:
            return item.parse(value)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return tuple(value) if isinstance(value, list) else value
