"""The ``Study`` record: command line > study file > --smoke-test > preset > defaults, tested field by field for
every study command; the parser holds no defaults of its own; study files are checked against the fields."""

import argparse
import dataclasses
import importlib.util
import sys
import typing
from pathlib import Path

import pytest

from cxrray.registry import UserError
from cxrray.tuning.options import Study

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"hide_seek": "HideSeek", "validate": "Validate", "source_bias": "SourceBias",
            "staged_pretraining": "Staged"}


def _sweep(name):
    spec = importlib.util.spec_from_file_location(f"record_{name}", ROOT / "sweeps" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _record(name) -> type[Study]:
    return getattr(_sweep(name), COMMANDS[name])


def _three(kind: type[Study], name: str) -> list:
    """Three different values of field ``name``'s type, none its default (a two-valued type repeats one)."""
    hint = typing.get_type_hints(kind, localns=vars(sys.modules[Study.__module__]))[name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    default = getattr(kind(), name)
    if origin is typing.Literal:
        others = [c for c in args if c != default]
        return (others * 3)[:3] if len(others) >= 3 else [others[0], default, others[0]]
    if hint is bool:
        return [not default, default, not default]
    if origin is tuple:
        item = args[0]
        make = {int: lambda i: (90 + i,), float: lambda i: (0.1 * i, 0.5), str: lambda i: (f"x{i}",)}[item]
        return [make(i) for i in (1, 2, 3)]
    make = {int: lambda i: 1000 + i, float: lambda i: 0.125 * i, str: lambda i: f"v{i}",
            Path: lambda i: Path(f"/tmp/p{i}")}[hint]
    return [make(i) for i in (1, 2, 3)]


def _fields():
    for name in COMMANDS:
        kind = _record(name)
        for f in dataclasses.fields(kind):
            if f.name != "preset":
                yield pytest.param(name, f.name, id=f"{name}.{f.name}")


@pytest.mark.parametrize("command, field", list(_fields()))
def test_each_option_resolves_command_line_over_file_over_preset_over_default(command, field):
    kind = _record(command)
    on_preset, in_file, on_line = _three(kind, field)
    with_preset = type("WithPreset", (kind,), {"presets": {"demo": {field: on_preset}}})
    default = getattr(kind(), field)
    assert getattr(with_preset.resolve({}, {}), field) == on_preset
    assert getattr(with_preset.resolve({}, {field: in_file}), field) == in_file
    assert getattr(with_preset.resolve({field: on_line}, {field: in_file}), field) == on_line
    demo = kind.presets["demo"]  # without a preset named: the demo preset over the defaults
    assert getattr(kind.resolve({}, {}), field) == (kind.convert(field, demo[field], "") if field in demo else default)
    assert isinstance(with_preset.resolve({}, {}), kind) and dataclasses.is_dataclass(kind)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(kind(), field, on_line)


@pytest.mark.parametrize("command", [c for c in COMMANDS if "smoke_test" in _record(c).field_names()])
def test_smoke_test_is_a_preset_that_never_overrides_what_the_user_gave(command, tmp_path):
    mod = _sweep(command)
    kind = _record(command)
    smoke = mod.parse_args(["--smoke-test"])
    for name, value in kind.smoke.items():  # the smoke layer beats the defaults and the preset
        assert smoke.to_dict()[name] == value, name
    mine = mod.parse_args(["--smoke-test", "--image-size", "48", "--epochs", "3", "--phantom-patients", "100"])
    assert (mine.image_size, mine.epochs, mine.phantom_patients) == (48, 3, 100)
    study = tmp_path / "study.yaml"
    study.write_text("image_size: 40\nbackbones: [resnet18]\nsmoke_test: true\n")
    filed = mod.parse_args(["--config", str(study)])
    assert (filed.smoke_test, filed.image_size, filed.backbones, filed.epochs) == (True, 40, ("resnet18",), 1)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_parser_holds_no_defaults_and_names_only_record_fields(command, monkeypatch):
    """Every default lives on the record: parsing an empty command line yields nothing, and every option's
    destination is a field of the command's record (and every field an option)."""
    parsers = []
    real = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda self, *a, **k: parsers.append(self) or real(self, *a, **k))
    _sweep(command).parse_args([])
    p = parsers[-1]
    assert vars(real(p, [])) == {}
    dests = {a.dest for a in p._actions if a.dest not in ("help", "config")}
    assert dests == set(_record(command).field_names())


def test_study_file_values_are_typed_by_the_record_and_errors_name_file_and_key(tmp_path):
    kind = _record("hide_seek")
    study = tmp_path / "s.yaml"
    study.write_text("seeds: 3\nmanifest: data/m.csv\nconfound: 0\nphantom: pneumothorax\n")
    values = kind.read_file(study)
    assert values == {"seeds": (3,), "manifest": (tmp_path / "data/m.csv").resolve(), "confound": 0.0,
                      "phantom": "pneumothorax"}
    assert kind.resolve({}, values).derive().task == "CL2"  # a derived default: a manifest is not the phantom
    assert kind.resolve({}, values | {"manifest": None}).derive().task == "finding_Pneumothorax"
    for text, message in [("seeds: [1.5]\n", "key 'seeds': 1.5 is not a whole number"),
                          ("phantom: lungs\n",
                           "key 'phantom': 'lungs' is not one of ['border', 'covid', 'pneumothorax']"),
                          ("image_size: [64, 32]\n", "key 'image_size' takes one value, got a list"),
                          ("preset: huge\n", "unknown preset 'huge'; valid: ['demo', 'paper']"),
                          ("phantom_patient: 9\n", "unknown key 'phantom_patient' for study hide_seek (did you mean "
                                                   "'phantom_patients'?)")]:
        study.write_text(text)
        with pytest.raises(UserError, match="^" + str(study).replace(".", r"\.")) as err:
            kind.resolve({}, kind.read_file(study), where=str(study))
        assert message in str(err.value)


def test_a_study_hands_on_its_recipe_resources_and_early_stop():
    mod = _sweep("hide_seek")
    study = mod.parse_args(["--epochs", "3", "--lr", "0.01", "--no-augment", "--search", "batch_size=8,16", "--asha",
                            "--max-concurrent", "2"])
    recipe = study.train_recipe()
    assert (recipe.epochs, recipe.lr, recipe.augment) == (3, 0.01, False)
    options = study.sweep_options()
    assert options.resources.max_concurrent_trials == 2 and options.early_stop.axes == ("batch_size",)
    with pytest.raises(UserError, match="give the axes to search"):
        mod.parse_args(["--asha"])  # ASHA without a search axis
