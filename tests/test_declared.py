"""An option declared once (``cxrray.declared``): the command line, the range checks and the help are read from
the record's field, on a small record of every kind of field and on the real commands' records."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from cxrray.declared import OneLineParser, add_arguments, check_ranges, declared, from_arguments, option
from cxrray.registry import UserError


@dataclass(frozen=True)
class Toy:
    size: int = option(64, "side in px", lo=16, hi=4096, unit="px")
    share: float = option(0.5, "a share", lo=0, hi=1, open_lo=True)
    kind: Literal["a", "b"] = option("a", "which one")
    seeds: tuple[int, ...] = option((0,), "seeds", lo=0, hi=9)
    where: Path | None = option(None, "a file", default_text="none given")
    keep: bool = option(True, "drop it", flag="--no-keep")
    quiet: bool = option(False, "say less")
    plain: int = 3  # no declaration: no option

    def __post_init__(self) -> None:
        check_ranges(self)


def _parse(*argv: str, defaults: bool = True) -> dict:
    p = OneLineParser(prog="toy", argument_default=None if defaults else argparse.SUPPRESS)
    add_arguments(p, Toy, defaults=defaults)
    return from_arguments(Toy, vars(p.parse_args(list(argv))))


def test_each_field_becomes_its_option_with_its_type_and_default():
    assert _parse() == {"size": 64, "share": 0.5, "kind": "a", "seeds": (0,), "where": None, "keep": True,
                        "quiet": False}
    got = _parse("--size", "128", "--share", "1", "--kind", "b", "--seeds", "3", "4", "--where", "x.csv",
                 "--no-keep", "--quiet")
    assert got == {"size": 128, "share": 1.0, "kind": "b", "seeds": (3, 4), "where": Path("x.csv"),
                   "keep": False, "quiet": True}
    assert Toy(**got).seeds == (3, 4)
    assert _parse("--size", "20", defaults=False) == {"size": 20}  # a study command: only what was given
    assert declared(next(f for f in dataclasses.fields(Toy) if f.name == "plain")) is None


@pytest.mark.parametrize("argv, says", [
    (("--size", "8"), "toy: error: argument --size: 8 is out of range: [16, 4096]"),
    (("--share", "0"), "toy: error: argument --share: 0 is out of range: (0, 1]"),
    (("--seeds", "1", "10"), "toy: error: argument --seeds: 10 is out of range: [0, 9]"),
    (("--size", "1.5"), "toy: error: argument --size: '1.5' is not a whole number"),
    (("--kind", "c"), "toy: error: argument --kind: invalid choice: 'c' (choose from 'a', 'b')"),
])
def test_a_bad_value_is_one_line_naming_the_option(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        _parse(*argv)
    assert stop.value.code == 2 and capsys.readouterr().err == says + "\n"


def test_a_record_made_in_code_or_from_a_file_meets_the_same_ranges():
    with pytest.raises(UserError, match=r"^--size 8 is out of range: \[16, 4096\] \(px\)$"):
        Toy(size=8)
    with pytest.raises(UserError, match=r"^--seeds 12 is out of range: \[0, 9\]$"):
        Toy(seeds=(1, 12))
    assert Toy(share=1.0).share == 1.0


def test_help_says_the_default_once_and_the_flag_of_an_inverted_switch(capsys):
    p = OneLineParser(prog="toy")
    add_arguments(p, Toy, defaults=True)
    text = " ".join(p.format_help().split())
    assert "side in px (default: 64)" in text and "seeds (default: 0)" in text
    assert "a file (default: none given)" in text and "--no-keep drop it" in text
    assert "say less (default" not in text and "--plain" not in text


def test_the_real_commands_read_their_options_from_their_records():
    """Every study option and every analysis option is a declared field: nothing is added by hand except the
    run folder, --config, --preset and the analysis' all/statistics choice."""
    from cxrray.analysis.steps import AnalysisOptions
    from cxrray.explain.fanout import Placement
    from cxrray.studies.hide_seek import HideSeek
    from cxrray.tuning import cli
    from cxrray.verdicts.plan import PlanQuestion
    from cxrray.verdicts.verdict import Rules

    p = cli.study_parser(None, HideSeek)
    flags = {a.dest for a in p._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(HideSeek) if declared(f)}
    assert flags == fields and "preset" not in fields and {"image_size", "mask_dilation", "wandb"} <= fields
    for record in (AnalysisOptions, Placement, Rules, PlanQuestion):
        assert [f.name for f in dataclasses.fields(record) if declared(f) is None] in ([], ["rules", "placement"])
