"""The questions of the reader-study form (notebook 07), and how an answer to each is read.

The three questions are those of the paper's form (wording and anchors of the authors'
script): whether the reader fully agrees with the given labels (yes/no), the image quality and
the difficulty of the diagnosis (integers 1–5). Each question's ``name`` is its column in the
response CSV; :meth:`Question.parse` turns a CSV cell into the number analysed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Question:
    """One question of the form.

    ``name`` is the CSV column; ``choices`` are ``(value written to the CSV, text shown)``;
    ``numeric`` maps a CSV value to the number analysed.
    """

    name: str
    title: str
    prompt: str
    choices: tuple[tuple[str, str], ...]
    numeric: Mapping[str, float] = field(repr=False)
    axis: str

    def parse(self, raw: str) -> tuple[float, str | None]:
        """A CSV cell as ``(number, None)``, or ``(NaN, problem)`` when it is not a valid answer.

        An empty cell is an unanswered question: ``(NaN, None)``. ``agree`` takes ``yes`` or
        ``no`` (any case); the ratings take an integer from 1 to 5 (``"4"`` or ``"4.0"``).
        """
        text = raw.strip()
        if text == "":
            return math.nan, None
        if self.name == "agree":
            value = self.numeric.get(text.lower())
            if value is None:
                return math.nan, f"{self.name} = {raw!r} is not yes or no"
            return value, None
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not (number.is_integer() and str(int(number)) in self.numeric):
            return math.nan, f"{self.name} = {raw!r} is not an integer from 1 to 5"
        return float(number), None


def _scale(low: str, high: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(v), f"{v}" + (f" ({low})" if v == 1 else f" ({high})" if v == 5 else ""))
        for v in range(1, 6)
    )


#: The three questions of the paper's form (wording and anchors of the authors' script).
QUESTIONS: tuple[Question, ...] = (
    Question(
        name="agree",
        title="Label agreement",
        prompt="Do you fully agree with the given label(s)?",
        choices=(("yes", "Yes"), ("no", "No")),
        numeric={"yes": 1.0, "no": 0.0},
        axis="share answering yes (0 = no, 1 = yes)",
    ),
    Question(
        name="quality",
        title="Image quality",
        prompt="How would you rate the image quality?",
        choices=_scale("poor", "excellent"),
        numeric={str(v): float(v) for v in range(1, 6)},
        axis="rating (1 = poor … 5 = excellent)",
    ),
    Question(
        name="difficulty",
        title="Diagnosis difficulty",
        prompt="How difficult is it to diagnose this image?",
        choices=_scale("very easy", "very difficult"),
        numeric={str(v): float(v) for v in range(1, 6)},
        axis="rating (1 = very easy … 5 = very difficult)",
    ),
)
QUESTION_NAMES = tuple(q.name for q in QUESTIONS)
