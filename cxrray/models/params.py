"""Parameter counts of the registry entries next to the published ones.

``python -m cxrray.models.params`` prints the table in docs/models.md. Counts are built at the input
size and class count of the publication; "with BN statistics" adds batch-norm running means and
variances, which Keras (the framework of most of the COVID-19 papers) reports as non-trainable
parameters and PyTorch keeps as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    name: str
    image_size: int
    num_classes: int
    count: int | None  # as published (None: only approximately, see note)
    source: str
    note: str = ""


PUBLISHED = (
    Published("vgg19", 224, 1000, 143_667_240, "Simonyan & Zisserman 2015 (ImageNet head)"),
    Published("efficientnet_b1", 240, 1000, 7_794_184, "Tan & Le 2019 (7.8 M)"),
    Published("densenet169", 224, 1000, 14_149_480, "Huang et al. 2017"),
    Published("resnet152", 224, 1000, 60_192_808, "He et al. 2016"),
    Published("inception_v3", 299, 1000, 23_834_568, "Szegedy et al. 2016 (without auxiliary head)"),
    Published("darkcovidnet", 256, 3, 1_164_434, "Ozturk et al. 2020 (CVR-Net's table: about 1.9 M)",
              "flatten width: the paper's last map is 13x13, this one 8x8 at 256 px"),
    Published("coronet", 150, 4, 33_969_964, "Khan et al. 2020",
              "matches at 150 px; the paper's stated 224 px would give 46.5 M"),
    Published("covid_caps", 224, 2, 295_488, "Afshar et al. 2020"),
    Published("covidnet", 224, 3, 11_750_000, "Wang et al. 2020 (11.75 M)", "channel widths inferred"),
    Published("covidnet_large", 224, 3, None, "COVIDNet-CXR4-A / CXR-3A (about 40 M)", "channel widths inferred"),
)


def counts(name: str, image_size: int, num_classes: int) -> tuple[int, int]:
    """(trainable parameters, plus batch-norm running statistics) of a freshly built entry."""
    import torch  # here, so that --help answers without it

    from cxrray.models import build_backbone

    model, _ = build_backbone(name, num_classes, 3, False, image_size)
    with torch.no_grad():  # materialise lazy layers at this input size
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return params, params + stats


def table(models: list[str] | None = None) -> str:
    """The table of parameter counts in docs/models.md (``models``: only these rows)."""
    lines = ["| model | input | classes | parameters (PyTorch) | with BN statistics (Keras count) | published | "
             "source | note |", "|---|---|---|---|---|---|---|---|"]
    for p in (x for x in PUBLISHED if models is None or x.name in models):
        ours, keras = counts(p.name, p.image_size, p.num_classes)
        pub = f"{p.count:,}" if p.count else "about 40 M"
        lines.append(f"| `{p.name}` | {p.image_size} | {p.num_classes} | {ours:,} | {keras:,} | {pub} | {p.source} "
                     f"| {p.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m cxrray.models.params [--models NAME ...]``: print the table (builds every model: minutes)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m cxrray.models.params", description=__doc__)
    p.add_argument("--models", nargs="+", choices=[x.name for x in PUBLISHED], metavar="NAME",
                   help="only these rows; valid: " + ", ".join(x.name for x in PUBLISHED))
    args = p.parse_args(argv)
    print(table(args.models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
