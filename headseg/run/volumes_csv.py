"""``volumes.csv`` of an output folder: the volume rows of every case segmented there, ``case`` first.

The third rule of :mod:`headseg.run.batch`, nothing lost: the table is rewritten (atomically, under the
folder's lock) after each case, so a cancelled or interrupted batch keeps the cases it finished. It keeps
the rows of earlier batches in the same folder, gains rows for new cases and replaces a case's rows only
with ``overwrite``. Tables written before the doubt and flags columns, or before the key column, are read
and written back with those columns.
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from headseg.errors import InputError
from headseg.io.files import PathLike
from headseg.measure.volumes import CSV_COLUMNS, KEY_COLUMN, QUALITY_COLUMNS, REVIEW_COLUMNS, VolumeRow

__all__ = ["VOLUMES_CSV", "COMBINED_COLUMNS", "CombinedVolumes"]

VOLUMES_CSV = "volumes.csv"
COMBINED_COLUMNS = ("case",) + REVIEW_COLUMNS
OLD_COMBINED_COLUMNS = ("case",) + CSV_COLUMNS  # before doubt and flags: read, and written back extended
KEYLESS_COMBINED_COLUMNS = ("case",) + CSV_COLUMNS + QUALITY_COLUMNS  # before the key column: the same


class CombinedVolumes:
    """``volumes.csv`` of an output folder: the volume rows of every case segmented there, ``case`` first.

    Rows are kept as text (as read), so the rows of earlier batches are written back unchanged."""

    def __init__(self, path: Path, rows: Optional[Dict[str, List[Dict[str, str]]]] = None) -> None:
        self.path = Path(path)
        self._rows: Dict[str, List[Dict[str, str]]] = dict(rows or {})

    @classmethod
    def read(cls, path: PathLike, overwrite: bool = False) -> CombinedVolumes:
        """The table at ``path`` (empty when there is none). A file that is not such a table is an error,
        or, with ``overwrite``, replaced by an empty table."""
        path = Path(path)
        if not path.is_file():
            return cls(path)
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = tuple(reader.fieldnames or ())
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            if overwrite:
                return cls(path)
            raise InputError(f"Cannot read {path} ({exc}). Move it away, choose another output folder, or pass "
                             "--overwrite to replace it.") from None
        if header not in (COMBINED_COLUMNS, OLD_COMBINED_COLUMNS, KEYLESS_COMBINED_COLUMNS):
            if overwrite:
                return cls(path)
            raise InputError(f"{path} is not a HeadSeg volume table (its columns are {', '.join(header) or 'none'}, "
                             f"expected {','.join(COMBINED_COLUMNS)}). Move it away, choose another output folder, or "
                             "pass --overwrite to replace it.")
        table: Dict[str, List[Dict[str, str]]] = {}
        for row in rows:
            if not row.get(KEY_COLUMN):  # an older table: its key is structure and side joined
                row[KEY_COLUMN] = f"{row['structure']}_{row['side']}" if row.get("side") else row["structure"]
            table.setdefault(row["case"], []).append(row)
        return cls(path, table)

    @property
    def cases(self) -> List[str]:
        return list(self._rows)

    def put(self, case: str, rows: Sequence[VolumeRow]) -> None:
        """Add the rows of ``case`` (replacing any it had, in place) and rewrite the file atomically.

        Under the folder's lock, into the table as it is on disk now: another run writing into the same
        folder (:mod:`headseg.run.outputlock`) may have added its cases since this one planned."""
        with self.locked():
            self._rows[case] = [{"case": case, **{k: str(v) for k, v in r.as_dict().items()}} for r in rows]
            self.write()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock, with this table merged with the file's present rows (disk first, then
        cases only this object knows); a file that is no volume table now is replaced, as planned."""
        from headseg.run.outputlock import folder_lock

        if not self.path.parent.is_dir():
            yield
            return
        with folder_lock(self.path.parent):
            try:
                disk = CombinedVolumes.read(self.path, overwrite=True)._rows
            except InputError:
                disk = {}
            merged = dict(disk)
            merged.update({c: r for c, r in self._rows.items() if c not in disk})
            self._rows = merged
            yield

    def move_to_end(self, cases: Sequence[str]) -> None:
        """Put the rows of ``cases`` (those the table has) after all others, in this order, and rewrite the
        file when that changes it. Under the folder's lock, with the rows other runs added meanwhile kept."""
        with self.locked():
            last = [c for c in cases if c in self._rows]
            wanted = [c for c in self._rows if c not in last] + last
            if list(self._rows) != wanted:
                self._rows = {c: self._rows[c] for c in wanted}
                self.write()

    def write(self) -> Path:
        from headseg.io.files import write_atomically

        def write(temp: Path) -> None:
            with open(temp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=COMBINED_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                for rows in self._rows.values():
                    writer.writerows(rows)

        return write_atomically(self.path, write, overwrite=True)


