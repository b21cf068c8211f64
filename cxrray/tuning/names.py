"""The names of the registries whose modules import torch (backbones, representations, training methods and
recipes, staged paths: the training package registers its methods on import), for ``--help`` without
importing torch, timm or Ray.

The names live in ``registry_names.json`` next to this file, written from the live registries by
``python -m cxrray.tuning.names``; ``tests/test_cli_help.py`` fails, with that command in its message, when an entry
is added and the file is not regenerated. Validation of a user's choice always uses the live registry (its
error lists the valid keys); this index only writes help texts. Light registries (tasks, designs) are read
directly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FILE = Path(__file__).with_name("registry_names.json")


def names(kind: str) -> tuple[str, ...]:
    """Names of registry ``kind``: backbone, representation, hide_seek (the five, in protocol order), method,
    recipe, path (staged pretraining)."""
    index = json.loads(FILE.read_text())
    if kind not in index:
        raise KeyError(f"no registry index {kind!r}; valid: {sorted(index)}")
    return tuple(index[kind])


def live() -> dict[str, list[str]]:
    """The same index from the registries themselves (imports torch)."""
    from cxrray.models import BACKBONES
    from cxrray.representations import REPRESENTATIONS, hide_seek_representations
    from cxrray.training.methods import METHODS
    from cxrray.training.recipes import RECIPES
    from cxrray.tuning.staged import PATHS

    return {"backbone": BACKBONES.names(), "representation": REPRESENTATIONS.names(),
            "hide_seek": list(hide_seek_representations()), "method": METHODS.names(), "recipe": RECIPES.names(),
            "path": PATHS.names()}


def main() -> int:
    FILE.write_text(json.dumps(live(), indent=1) + "\n")
    print(f"wrote {FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
