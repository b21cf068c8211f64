import json

import pytest

from cxrray.config import TrainRecipe, TrialSpec
from cxrray.registry import Registry, UnknownNameError


def test_registry_decorator_and_helpful_error():
    reg: Registry = Registry("widget")

    @reg.register()
    def alpha():
        return 1

    reg.register("beta")(lambda: 2)
    assert reg.names() == ["alpha", "beta"] and "alpha" in reg and len(reg) == 2
    assert reg.get("alpha")() == 1
    with pytest.raises(UnknownNameError, match="unknown widget 'gamma'; valid: alpha, beta"):
        reg.get("gamma")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha")(lambda: 3)


def _spec(**kw) -> TrialSpec:
    base = dict(study="s", data_id="d", representation="original", backbone="basecnn")
    return TrialSpec(**(base | kw))


def test_trial_id_is_stable_hash_of_every_field():
    a, b = _spec(), _spec()
    assert a.trial_id == b.trial_id and len(a.trial_id) == 12
    assert a.trial_id != _spec(seed=1).trial_id
    assert a.trial_id != _spec(recipe=TrainRecipe(lr=0.5)).trial_id
    assert a.trial_id != _spec(data_id="other").trial_id
    assert a.run_name == "original.basecnn.none.s0"


def test_adding_a_field_with_a_default_keeps_every_existing_id():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Later(TrialSpec):  # a future cxrray with one more axis
        new_axis: str = "x"

    base = dict(study="s", data_id="d", representation="original", backbone="basecnn", seed=3)
    assert Later(**base).trial_id == TrialSpec(**base).trial_id  # finished trials stay finished
    assert Later(**base, new_axis="y").trial_id != TrialSpec(**base).trial_id
    assert _spec(design="single", task="CL3", fold=2).run_name == "original.basecnn.none.single.CL3.f2.s0"


def test_spec_round_trip_and_unknown_key():
    a = _spec(seed=4, recipe=TrainRecipe(epochs=9))
    assert TrialSpec.from_dict(a.to_dict()) == a
    assert a.flat()["recipe.epochs"] == 9
    bad = a.to_dict() | {"sed": 1}
    with pytest.raises(ValueError, match=r"unknown TrialSpec field\(s\) \['sed'\]"):
        TrialSpec.from_dict(bad)
    with pytest.raises(ValueError, match="epoch"):
        TrialSpec.from_dict(a.to_dict() | {"recipe": {"epoch": 3}})


def test_trial_ids_computed_before_the_joins_refactor_are_kept():
    """Resume keys and W&B run ids survive: ids of a few specs, computed with the code before the typed joins."""
    R = TrainRecipe
    pinned = {
        "192010f6fced": TrialSpec(study="hide_seek", data_id="abc123", representation="lungs_removed",
                                  backbone="basecnn"),
        "4c741f1cfa61": TrialSpec(study="hide_seek", data_id="abc123", representation="original", backbone="resnet18",
                                  seed=2, image_size=224, pretrained=True,
                                  recipe=R(epochs=20, lr=1e-4, class_weights="1,1,4")),
        "b61bd9cf2d38": TrialSpec(study="source_bias", data_id="d1", representation="seg_crop", backbone="covid_sdnet",
                                  design="single", fold=3, method="fucitnet", recipe=R(optimizer="sgd", batch_size=16)),
        "406449fa12e7": TrialSpec(study="staged", data_id="t", representation="original", backbone="densenet121",
                                  task="PNEU", pretraining="nih14>pneu_high", init_from="0123456789ab",
                                  recipe=R(select_by="loss", early_stop=10)),
        "19f46e14d1ed": TrialSpec(study="hide_seek", data_id="abc123", representation="original", backbone="basecnn",
                                  setting="lr=0.001", recipe=R(lr=0.001)),
    }
    assert {k: s.trial_id for k, s in pinned.items()} == {k: k for k in pinned}
    assert pinned["b61bd9cf2d38"].run_name == "seg_crop.covid_sdnet.none.single.fucitnet.f3.s0"


def test_trial_context_round_trip_and_layout(tmp_path):
    from cxrray.config import DataRef, RunLayout, TrialContext

    spec = _spec(seed=1)
    ctx = TrialContext(spec=spec, run_dir=str(tmp_path), data=DataRef(spec.data_id, "/s", (0.5, 2.0), ("train", "val")),
                       wandb="disabled", weights="/w.pt", checkpoint_every_s=5.0)
    again = TrialContext.from_dict(json.loads(json.dumps(ctx.to_dict())))  # as it crosses into a Ray actor
    assert again == ctx and again.data.splits == ("train", "val") and again.data.class_weights == (0.5, 2.0)
    assert ctx.trial_dir.path == tmp_path / "trials" / spec.trial_id
    assert ctx.trial_dir.predictions.name == "predictions.parquet" and ctx.trial_dir.resume.name == "resume.pt"
    layout = RunLayout(tmp_path)
    assert layout.shards_of(spec) == tmp_path / "shards" / f"{spec.data_id}-{spec.image_size}px"
    assert (layout.splits("nih14").name, layout.quarantine().name) == ("splits-nih14.csv", "quarantine.csv")
    assert not ctx.trial_dir.finished
    ctx.trial_dir.path.mkdir(parents=True)
    ctx.trial_dir.stopped.write_text("{}")
    assert ctx.trial_dir.finished and not ctx.trial_dir.done
    with pytest.raises(ValueError, match="wandb 'offlin' is not valid"):
        TrialContext(spec=spec, run_dir="r", data=DataRef(spec.data_id, "/s"), wandb="offlin")
    with pytest.raises(ValueError, match="unknown TrialContext field"):
        TrialContext.from_dict(ctx.to_dict() | {"loop_config": {}})


@pytest.mark.parametrize("bad, message", [
    ({"optimizer": "adamw"}, "optimizer 'adamw' is not valid; valid: adam, sgd"),
    ({"select_by": "Loss"}, "select_by 'Loss' is not valid; valid: auroc, loss"),
    ({"class_weights": "1,x"}, "class_weights '1,x' is not valid"),
    ({"epochs": 0}, "epochs must be a whole number >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"plateau_factor": 1.5}, "plateau_factor must be in"),
])
def test_recipe_choices_are_checked_at_construction(bad, message):
    from cxrray.registry import UserError

    with pytest.raises(UserError, match=message):
        TrainRecipe(**bad)


def test_run_cli_turns_only_user_errors_into_one_line(capsys):
    """Bad input: one line naming it, exit 2. A bug (any other exception, a plain ValueError included) keeps its
    traceback instead of being disguised as bad input."""
    from cxrray.registry import UserError
    from cxrray.tuning.cli import run_cli

    def bad_input() -> int:
        raise UserError("m.csv: missing column(s) ['image_path']")

    with pytest.raises(SystemExit) as stop:
        run_cli(bad_input, "hide_seek.py")
    assert stop.value.code == 2
    assert capsys.readouterr().err == "hide_seek.py: error: m.csv: missing column(s) ['image_path']\n"

    def bug() -> int:
        raise ValueError("operands could not be broadcast together")

    with pytest.raises(ValueError, match="broadcast"):
        run_cli(bug, "hide_seek.py")
