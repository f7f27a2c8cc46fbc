"""Municipality of residence -> organiser area, from the Statistics Finland classification.

The CSV ships inside the package (broker/domain/data/, with its SOURCES.md) so routing never depends on a
file next to the checkout. An unknown code is an error for the sender, never a guess.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["ALAND_AREA", "Area", "Classification", "Municipality"]

ALAND_AREA = "91"


@dataclass(frozen=True)
class Municipality:
    code: str
    name_fi: str
    name_sv: str
    area_code: str


@dataclass(frozen=True)
class Area:
    code: str
    name_fi: str
    name_sv: str


@dataclass(frozen=True)
class Classification:
    municipalities: dict[str, Municipality]
    areas: dict[str, Area]

    @staticmethod
    @lru_cache(maxsize=1)
    def load() -> Classification:
        text = (Path(__file__).resolve().parent / "data" / "municipalities_fi.csv").read_text("utf-8")
        municipalities: dict[str, Municipality] = {}
        areas: dict[str, Area] = {}
        for row in csv.DictReader(io.StringIO(text)):
            m = Municipality(row["municipality_code"], row["name_fi"], row["name_sv"], row["area_code"])
            municipalities[m.code] = m
            areas.setdefault(m.area_code, Area(m.area_code, row["area_name_fi"], row["area_name_sv"]))
        return Classification(municipalities, dict(sorted(areas.items())))

    @property
    def area_codes(self) -> list[str]:
        return list(self.areas)

    def area_of(self, municipality_code: str) -> str | None:
        m = self.municipalities.get(municipality_code)
        return m.area_code if m else None
