"""FHIR date, dateTime and instant strings as UTC ranges (naive datetimes, as the store keeps them).

A partial date is the range it covers: "2025" is the whole year, "2025-03" the month (FHIR R4
datatypes.html#dateTime; search.html#date compares ranges).
"""

from datetime import UTC, date, datetime, timedelta

from app.fhir.outcome import error


def fhir_range(value: str) -> tuple[datetime, datetime]:
    """[start, end) in naive UTC for a FHIR date/dateTime/instant; ValueError if it is none of those."""
    text = value.strip()
    if len(text) == 4 and text.isdigit():
        year = int(text)
        return datetime(year, 1, 1), datetime(year + 1, 1, 1)
    if len(text) == 7 and text[4] == "-":
        year, month = int(text[:4]), int(text[5:7])
        start = datetime(year, month, 1)
        return start, datetime(year + (month == 12), month % 12 + 1, 1)
    if len(text) == 10:
        day = date.fromisoformat(text)
        start = datetime(day.year, day.month, day.day)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a dateTime with a time must have a time zone")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    precision = timedelta(seconds=1) if moment.microsecond == 0 else timedelta(microseconds=1)
    return utc, utc + precision


def search_range(value: str, parameter: str) -> tuple[datetime, datetime]:
    try:
        return fhir_range(value)
    except ValueError:
        raise error(400, "value", f"Invalid date '{value}' for search parameter '{parameter}'") from None


def to_utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def instant(moment: datetime) -> str:
    """A stored naive-UTC datetime as a FHIR instant with millisecond precision."""
    return moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
