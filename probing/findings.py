"""Findings: one-sentence answers written from a section's key numbers, and names for people.

An analysis states what it found as :class:`Finding` objects on its
:class:`~probing.sections.Section`: a question and a sentence template whose placeholders are
names of the section's key numbers (``"{probe_acc_last:.0%}"``). The report fills the templates
from the numbers when it is written, so a sentence can never disagree with ``results.json``;
the report opens with these sentences, each linked to its section.

Key numbers keep their machine names in ``results.json``; the report shows them under a name
for people: the section's ``labels`` entry, else :func:`human_label`'s rule.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import SchemaError

__all__ = ["Finding", "human_label"]


@dataclass(frozen=True)
class Finding:
    """One answer of a section, written from its key numbers.

    Parameters
    ----------
    question : str
        What the sentence answers, short (``"Which layers encode the label?"``).
    template : str
        One sentence, :meth:`str.format` syntax; every placeholder is the name of a key number
        of the same section, with an optional format spec (``"{acc_last:.0%}"``,
        ``"block {best_layer}"``). Words that depend on the result (``"beats"`` or ``"trails"``)
        are chosen by the analysis when it builds the template.
    """

    question: str
    template: str

    def keys(self) -> list[str]:
        """Names of the key numbers the sentence uses, in order."""
        try:
            return [name for _, name, _, _ in string.Formatter().parse(self.template)
                    if name is not None]
        except ValueError as exc:
            raise SchemaError(
                f"finding template {self.template!r} is not a format string ({exc}); write "
                "placeholders as {key_number_name} or {key_number_name:.2f}."
            ) from exc

    def render(self, numbers: Mapping[str, float], section: str = "") -> str:
        """The sentence with ``numbers`` filled in.

        Raises
        ------
        SchemaError
            When a placeholder is no key number of the section, or a format spec does not fit.
        """
        missing = [k for k in self.keys() if k not in numbers]
        if missing or "" in self.keys():
            raise SchemaError(
                f"finding {self.template!r} of section {section!r} uses {missing[:1] or ['{}']}"
                f", which is not one of its key numbers; name a key of Section.numbers in each "
                "placeholder."
            )
        values = {k: _plain(numbers[k]) for k in self.keys()}
        try:
            return self.template.format(**values)
        except (ValueError, TypeError) as exc:
            raise SchemaError(
                f"finding {self.template!r} of section {section!r} cannot be filled ({exc}); "
                "fix the placeholder's format spec."
            ) from exc


def _plain(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


#: Words written differently for people (whole underscore-separated parts of a key name).
_WORDS = {
    "cls": "CLS", "cka": "CKA", "auc": "AUC", "ig": "IG", "pe": "PE", "pc": "PC", "r2": "R²",
    "knn": "k-NN", "px": "px", "mdl": "MDL", "id": "id", "pca": "PCA", "tsne": "t-SNE",
    "umap": "UMAP", "acc": "accuracy", "std": "s.d.", "ci": "CI", "n": "number of",
    "renorm": "(renormalised)", "raw": "(raw)", "vs": "vs", "init": "init",
}


def human_label(key: str) -> str:
    """A key number's name for people, by rule: ``layer1_mean_px_raw`` -> ``"layer 1 mean px
    (raw)"``, ``cka_cls_vs_random_init_last`` -> ``"CKA CLS vs random init last"``.

    Underscores become spaces, a word glued to a number is split (``layer1`` -> ``layer 1``),
    known abbreviations are spelled as people write them (``cls`` -> ``CLS``), and the first
    letter is capitalised. Give a better name in ``Section.labels`` where the rule falls short.
    """
    words = []
    key = re.sub(r"(?<![a-z])pc(\d+)_(\d+)", r"PC\1-\2", key)  # pc1_2: the first two PCs
    for part in key.split("_"):
        if not part:
            continue
        low = part.lower()
        if low in _WORDS:
            words.append(_WORDS[low])
            continue
        match = re.fullmatch(r"([a-z]+)(\d+)", low)
        words.append(f"{match[1]} {match[2]}" if match and match[1] not in ("pc", "r") else part)
    text = " ".join(words) or key
    return text[0].upper() + text[1:]
