"""The settings table: one declaration gives the config, the flags, env vars, --help, README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mab.cli import build_parser, config_from_args
from mab.config import Config, Setting, markdown_table, settings

README = Path(__file__).resolve().parent.parent / "README.md"


def _parse(*argv: str, env: dict[str, str] | None = None) -> Config:
    args = build_parser(environ=env or {}).parse_args(["serve", *argv])
    return config_from_args(args)


def test_readme_table_is_the_settings_table() -> None:
    """The README's configuration table is exactly what `mab settings` prints."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- settings:.*?-->\n(.*?)<!-- /settings -->", text, re.S)
    assert match is not None, "README has no generated settings table"
    assert match.group(1) == markdown_table(), "README table is stale: paste `mab settings`"


def test_defaults_are_the_config_defaults() -> None:
    """With no flags and no env vars, the CLI builds Config() itself."""
    assert _parse() == Config()


def test_every_setting_has_a_flag_an_env_var_and_help() -> None:
    """Each row reaches --help with its env var, and every Config field has a row."""
    rows = settings()
    text = build_parser(environ={})._subparsers._group_actions[0].choices["serve"].format_help()
    for row in rows:
        assert row.help, row.name
        assert row.flag in text and row.env in text, row.flag
    names = {row.name for row in rows}
    assert {"host", "max_items", "entity_type", "cache_ttl"} <= names


@pytest.mark.parametrize("row", settings(), ids=lambda row: row.flag)
def test_env_var_sets_each_setting_and_a_flag_wins(row: Setting) -> None:
    """MAB_<NAME> changes the setting it names; the flag on the command line wins over it."""
    if row.kind is bool:
        env_value, value = ("0", False) if row.default else ("1", True)
        flag_argv = [row.flag if not value else f"--no-{row.flag[2:]}"]
        flag_value = not value
    elif row.choices:
        value = env_value = next(c for c in row.choices if c != row.default)
        flag_argv, flag_value = [row.flag, row.default], row.default
    elif row.kind in (str, Path):
        env_value, value = "some/where", row.kind("some/where")
        flag_argv, flag_value = [row.flag, "other"], row.kind("other")
    else:
        value = row.kind(7)
        env_value = "7"
        flag_argv, flag_value = [row.flag, "9"], row.kind(9)
    extra = []
    if row.name == "store" and value != "embedded":  # a Vertex store needs its resource
        extra = ["--vertex-entity-type", "e", "--vertex-feature-view", "v"]

    def read(config: Config) -> object:
        return getattr(getattr(config, row.group) if row.group else config, row.name)

    config = _parse(*extra, env={row.env: env_value})
    assert read(config) == value
    config = _parse(*extra, *flag_argv, env={row.env: env_value})
    assert read(config) == flag_value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAB_WORKERS": "0"}, "MAB_WORKERS='0': must be > 0"),
        ({"MAB_PORT": "-1"}, "MAB_PORT='-1': must be >= 0"),
        ({"MAB_STORE": "nope"}, "MAB_STORE='nope': choose from"),
        ({"MAB_ACCESS_LOG": "maybe"}, "not a boolean"),
    ],
)
def test_bad_env_value_names_the_variable(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value in the environment stops with exit code 2, naming the variable."""
    with pytest.raises(SystemExit) as exit_info:
        _parse(env=env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
