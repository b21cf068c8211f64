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
