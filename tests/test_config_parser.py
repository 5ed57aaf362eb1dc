"""One parser for every command: flags and ``--config FILE.yaml`` are the same fields.

Each command's defaults written to YAML and read back with ``--config`` give the same
dataclasses; flags override the file; an unknown key, a wrong type or a bad choice is one
sentence naming the key and the file (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest
import yaml

from hf_mixture.cli import build_parser, main
from hf_mixture.config import ConfigParser
from hf_mixture.errors import HFMixtureError


def _commands() -> dict[str, ConfigParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


COMMANDS = sorted(_commands())


def _required(parser: ConfigParser) -> tuple[list[str], list[str]]:
    """Sample positionals and required flags: each field without a default gets 'x'."""
    positionals, flags = [], []
    for dtype in parser.dataclass_types:
        for f in dataclasses.fields(dtype):
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            if f.metadata.get("positional"):
                positionals.append("x")
            else:
                flags += [f"--{f.name}", "x"]
    return positionals, flags


def _file_values(options: tuple) -> dict:
    """What a config file holds for these dataclasses: every field that is not positional."""
    out = {}
    for obj in options:
        for f in dataclasses.fields(obj):
            if not f.metadata.get("positional"):
                value = getattr(obj, f.name)
                out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def test_every_command_is_one_config_parser():
    assert set(COMMANDS) >= {"cluster", "tokenize", "inspect", "search", "fit-laws",
                             "plan", "validate", "playground", "climb", "train"}
    for name, parser in _commands().items():
        assert isinstance(parser, ConfigParser) and parser.dataclass_types, name
        assert "--config" in parser._option_string_actions, name


@pytest.mark.parametrize("name", COMMANDS)
def test_defaults_round_trip_through_yaml(name, tmp_path):
    parser = _commands()[name]
    positionals, flags = _required(parser)
    defaults = parser.parse_args([*positionals, *flags]).options
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(_file_values(defaults)))
    assert parser.parse_args([*positionals, "--config", str(path)]).options == defaults
    # Keys may be written with dashes, as the flags are.
    dashed = {k.replace("_", "-"): v for k, v in _file_values(defaults).items()}
    path.write_text(yaml.safe_dump(dashed))
    assert parser.parse_args([*positionals, f"--config={path}"]).options == defaults


@pytest.mark.parametrize("name", COMMANDS)
def test_help_and_keys_come_from_the_same_fields(name):
    parser = _commands()[name]
    actions = {a.dest: a for a in parser._actions}
    for dtype in parser.dataclass_types:
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if dataclasses.is_dataclass(hints[f.name]):
                continue  # a section: config file only
            assert f.metadata.get("help"), f"{name}: {f.name} has no help"
            assert actions[f.name].help.startswith(f.metadata["help"]), f"{name}: {f.name}"
            if not f.metadata.get("positional"):
                assert f"--{f.name.replace('_', '-')}" in actions[f.name].option_strings


def test_flags_override_the_file_and_booleans_have_no_flags(tmp_path):
    parser = _commands()["cluster"]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"output": "out", "num-clusters": 7, "prune": False,
                                    "dedup": "none", "executor": "local", "tasks": 3}))
    command, config, executor = parser.parse_args(
        ["corpus", "--config", str(path), "--num-clusters", "9", "--prune"]).options
    assert (command.input, command.output) == ("corpus", "out")
    assert (config.num_clusters, config.prune, config.dedup) == (9, True, "none")
    assert executor.tasks == 3
    # Flags before --config win too, and a boolean's file value is turned off with --no-<name>.
    path.write_text(yaml.safe_dump({"output": "out", "quality_flags": True, "seed": 4}))
    _, config, _ = parser.parse_args(["--seed", "5", "--config", str(path),
                                      "--no-quality-flags"]).options
    assert (config.seed, config.quality_flags) == (5, False)
    # The file's values do not stay behind in the parser.
    _, config, _ = parser.parse_args(["--output", "o"]).options
    assert config == type(config)()


def test_dataset_config_is_the_inputs_config_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset-config: en\n")
    _, config, _ = _commands()["cluster"].parse_args(
        ["--output", "o", "--config", str(path)]).options
    assert config.dataset_config == "en"


@pytest.mark.parametrize("content, needle", [
    ("num_clustrs: 3\n", "unknown key(s) 'num_clustrs'"),
    ("input: data.parquet\n", "unknown key(s) 'input'"),       # INPUT stays positional
    ("num_clusters: many\n", "key 'num_clusters' has value 'many'"),
    ("dedup: fuzzy\n", "key 'dedup' is 'fuzzy'; choose one of exact, minhash, none"),
    ("executor: kubernetes\n", "key 'executor' is 'kubernetes'"),
    ("num-clusters: 3\nnum_clusters: 4\n", "given twice"),
    ("- 1\n- 2\n", "must hold a mapping"),
])
def test_bad_config_file_is_one_sentence_naming_key_and_file(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["cluster", "--output", str(tmp_path / "out"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and str(path) in err, err
    assert err.startswith("hf-mixture cluster: error: ")
    assert not (tmp_path / "out").exists()


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["tokenize", "in", "--output", "o", "--config", str(tmp_path / "no.yaml")]) == 2
    assert "no.yaml' does not exist" in capsys.readouterr().err


def test_climb_sections_are_typed_and_inherit_the_shared_keys(tmp_path):
    from hf_mixture.climb import ClimbConfig, TokenizeSettings
    from hf_mixture.clustering import ClusterConfig
    from hf_mixture.search import SearchConfig

    path = tmp_path / "climb.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "tokenizer": "tok", "cluster": {"final-clusters": 2},
                                    "tokenize": {"validation_fraction": 0.1},
                                    "search": {"rounds": [2]}}))
    (cfg,) = _commands()["climb"].parse_args(["--config", str(path)]).options
    assert isinstance(cfg.cluster, ClusterConfig) and isinstance(cfg.search, SearchConfig)
    assert (cfg.cluster.seed, cfg.cluster.tokenizer, cfg.cluster.final_clusters) == (3, "tok", 2)
    assert cfg.tokenize == TokenizeSettings(validation_fraction=0.1)
    assert (cfg.search.seed, cfg.search.rounds) == (3, [2])
    assert ClimbConfig(seed=1).cluster == ClusterConfig(seed=1)
    path.write_text(yaml.safe_dump({"search": {"roundz": [2]}}))
    with pytest.raises(HFMixtureError, match=r"climb.yaml \[search\]: unknown key\(s\) 'roundz'"):
        _commands()["climb"].parse_args(["--config", str(path)])
    path.write_text(yaml.safe_dump({"cluster": 3}))
    with pytest.raises(HFMixtureError, match="section 'cluster' must be a mapping"):
        _commands()["climb"].parse_args(["--config", str(path)])
    with pytest.raises(HFMixtureError, match="'overwrite' is managed by climb"):
        ClimbConfig(cluster={"overwrite": True})


def test_train_flags_and_overrides_mix_in_any_order(tmp_path):
    from hf_mixture.train_cli import recipe_overrides

    parser = _commands()["train"]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"store": "s", "max-steps": 5, "dry_run": True}))
    command, data = parser.parse_args(["r.yaml", "model.num_hidden_layers=3", "--seq-len", "16",
                                       "--config", str(path), "shape=62m", "--max-steps",
                                       "7"]).options
    assert command.recipe == "r.yaml" and command.dry_run is True
    assert command.overrides == ["model.num_hidden_layers=3", "shape=62m"]
    assert recipe_overrides(command, data) == [
        "model.num_hidden_layers=3", "shape=62m", 'data.store="s"', "data.seq_len=16",
        "training.max_steps=7"]
