"""What the first pass over a table learns of each feature column (`ColumnScan`): numbers, text or ISO dates,
and whether the column identifies rows rather than describes them (`refusal` names every such column at once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.columns import OTHER_DATE, date_feature_names, date_seconds, is_missing, is_number
from pipeline.errors import PipelineError

MAX_CATEGORIES = 50  # values of one text column; more make as many columns, and an id column would pass
# A text column with a different value in this share of its rows, at least IDENTIFIER_MIN_ROWS of them, identifies
# rows (names, addresses, IDs): one-hot encoded it would be a column per row, learnt by heart.
IDENTIFIER_SHARE = 0.9
IDENTIFIER_MIN_ROWS = 20
COUNTER_MIN_ROWS = 10  # a numeric column counting 1, 2, 3, ... down this many rows numbers them, nothing more


def _written_number(text: str) -> bool:
    """Whether a text value is a number in dress: '10%', '$5', '1,500', '2,5' (a decimal comma), "1'000"."""
    core = text.lstrip("+-").strip("$€£¥% ").replace(" ", "").replace("'", "")
    return any(c.isdigit() for c in core) and (is_number(core.replace(",", "")) or is_number(core.replace(",", ".")))


@dataclass
class ColumnScan:
    """What the scan learns of one feature column: numbers, text, dates, and whether it identifies rows."""

    present: int = 0
    numbers: int = 0
    dates: int = 0
    with_time: bool = False
    texts: set[str] = field(default_factory=set)  # text other than ISO dates
    first_text: tuple[int, str] | None = None  # (line, value): named when the column mixes kinds
    first_date: tuple[int, str] | None = None
    last_number: float | None = None
    counts_rows: bool = True  # every value so far an integer, one more than the value before it

    def add(self, cell: str, line: int) -> None:
        if is_missing(cell):
            self.counts_rows = False
            return
        self.present += 1
        if is_number(cell):
            value = float(cell)
            following = self.last_number is None or value == self.last_number + 1
            self.counts_rows = self.counts_rows and following and value.is_integer()
            self.numbers, self.last_number = self.numbers + 1, value
        elif date_seconds(cell) is not None:
            self.dates += 1
            self.with_time = self.with_time or len(cell) > len("YYYY-MM-DD")
            self.first_date = self.first_date or (line, cell)
        else:
            self.texts.add(cell)
            self.first_text = self.first_text or (line, cell)

    def kind(self, name: str, path: Path) -> tuple[str, tuple[str, ...]]:
        """("number", ()), ("text", its sorted values) or ("date", its features); a column mixing kinds, or of
        numbers written as text, is refused; one that identifies rows is ("refused", (why,))."""
        if self.dates and not self.numbers and not self.texts:
            return "date", date_feature_names(self.with_time)
        if self.dates and self.first_text is not None:
            (line, text), (_, date) = self.first_text, self.first_date or (0, "")
            raise PipelineError(
                f"{path}: column '{name}' holds dates ('{date}') and other text (line {line} holds '{text}'); write "
                "every value as an ISO date (YYYY-MM-DD) or leave it empty, or drop the column with data.drop_columns."
            )
        if self.first_text is None and not self.dates:
            if self.counts_rows and self.numbers >= COUNTER_MIN_ROWS:
                return "refused", ("counts the rows (1, 2, 3, ...)",)
            return "number", ()
        line, text = self.first_text or self.first_date or (0, "")
        if _written_number(text) and (self.numbers or all(_written_number(value) for value in self.texts)):
            raise PipelineError(
                f"{path}: column '{name}' holds numbers written as text (line {line} holds '{text}'); write them as "
                "plain numbers with a decimal point, without units or thousands separators (10% as 10 or 0.1, "
                "1,500 as 1500, 2,5 as 2.5), or they would become categories."
            )
        if self.numbers:
            raise PipelineError(
                f"{path}: column '{name}' holds numbers and text (line {line} holds '{text}'); a feature column "
                "holds numbers, or only text (one-hot encoded): fix the value, or drop the row."
            )
        return self._text_kind(line, text)

    def _text_kind(self, line: int, text: str) -> tuple[str, tuple[str, ...]]:
        """A column of text: its sorted values, or why it identifies rows rather than describes them."""
        if OTHER_DATE.fullmatch(text):
            return "refused", (f"holds dates not written as ISO dates ('{text}' on line {line}: write YYYY-MM-DD)",)
        if self.present >= IDENTIFIER_MIN_ROWS and len(self.texts) >= IDENTIFIER_SHARE * self.present:
            return "refused", (f"holds a different text in {len(self.texts)} of {self.present} rows (an identifier)",)
        if len(self.texts) > MAX_CATEGORIES:
            return "refused", (
                f"holds {len(self.texts)} different values, more than the {MAX_CATEGORIES} one-hot encoding takes",
            )
        return "text", tuple(sorted(self.texts))


def refusal(path: Path, refused: dict[str, str]) -> PipelineError:
    """Every column that cannot be a feature, in one sentence: a table is fixed in one run, not one per column."""
    listed = "; ".join(f"'{name}' {why}" for name, why in refused.items())
    count, them = ("a column", "it") if len(refused) == 1 else (f"{len(refused)} columns", "them")
    return PipelineError(
        f"{path} has {count} that cannot be features: {listed}; drop {them} with data.drop_columns: "
        f"[{', '.join(refused)}] (a column of ISO dates is turned into numbers; one naming groups of rows can be "
        "data.group_column), or keep only the others with data.feature_columns."
    )
