"""Request bodies as the server's axum/serde layer reads them.

415 without a JSON content type, 400 text for invalid JSON, 422 text for a body of the
wrong shape (missing or mistyped fields, duplicate keys, unknown enum variants), with
serde's wording; then the parsed NewActivity / ActivityUpdate and the activity date
(YYYY-MM-DD or RFC 3339, else the core's 400).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from fakes.wealthfolio.replies import MSG_415, MSG_BAD_DATE, DomainError, HttpError, text_reply

if TYPE_CHECKING:
    from fakes.wealthfolio.transport import IncomingRequest

STATUSES = ("POSTED", "PENDING", "DRAFT", "VOID")

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|z|[+-]\d{2}:\d{2})$"
)
_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class _DupAwareDict(dict[str, Any]):
    duplicates: tuple[str, ...] = ()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = _DupAwareDict()
    dups: list[str] = []
    for key, value in pairs:
        if key in out:
            dups.append(key)
        out[key] = value
    out.duplicates = tuple(dups)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid number {name}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, Decimal):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


class BodyShape:
    """Raises axum/serde-style 422 rejections for a parsed JSON body."""

    def __init__(self, text: str) -> None:
        lines = text.split("\n")
        self.position = f"line {len(lines)} column {len(lines[-1])}"

    def fail(self, path: str, message: str) -> HttpError:
        where = f"{path}: " if path else ""
        return HttpError(text_reply(
            422,
            "Failed to deserialize the JSON body into the target type: "
            f"{where}{message} at {self.position}",
        ))

    def obj(self, value: Any, path: str, type_name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"invalid type: {_describe(value)}, expected struct {type_name}")
        dups = getattr(value, "duplicates", ())
        if dups:
            raise self.fail(path, f"duplicate field `{dups[0]}`")
        return value

    def _child(self, path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def req_str(self, obj: dict[str, Any], key: str, path: str = "") -> str:
        if key not in obj:
            raise self.fail(path, f"missing field `{key}`")
        value = obj[key]
        if not isinstance(value, str):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected a string")
        return value

    def opt_str(self, obj: dict[str, Any], key: str, path: str = "") -> str | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected a string")
        return value

    def opt_bool(self, obj: dict[str, Any], key: str, path: str = "") -> bool | None:
        value = obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(self._child(path, key),
                        f"invalid type: {_describe(value)}, expected a boolean")

    def req_int(self, obj: dict[str, Any], key: str, path: str = "") -> int:
        if key not in obj:
            raise self.fail(path, f"missing field `{key}`")
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected i64")
        return value

    def opt_enum(self, obj: dict[str, Any], key: str, variants: tuple[str, ...],
                 path: str = "") -> str | None:
        value = self.opt_str(obj, key, path)
        if value is not None and value not in variants:
            expected = ", ".join(f"`{v}`" for v in variants)
            raise self.fail(self._child(path, key),
                            f"unknown variant `{value}`, expected one of {expected}")
        return value

    def opt_decimal(self, obj: dict[str, Any], key: str, path: str = "") -> Decimal | None:
        """Numbers arrive as JSON numbers or numeric strings; "" and null mean none."""
        value = obj.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected a Decimal")
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, Decimal):
            return value
        if isinstance(value, str) and _NUMERIC.match(value):
            try:
                return Decimal(value)
            except InvalidOperation:
                pass
        raise self.fail(self._child(path, key),
                        f"invalid value: {_describe(value)}, expected a Decimal")

    def str_or_list(self, obj: dict[str, Any], key: str, path: str = "") -> list[str] | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise self.fail(self._child(path, key),
                        "data did not match any variant of untagged enum StringOrVec")


def _is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/")
                                          and mime.endswith("+json"))


def json_body(req: IncomingRequest) -> tuple[Any, BodyShape]:
    """axum's Json extractor: 415 without a JSON content type, 400 for invalid JSON."""
    if not _is_json_content_type(req.headers.get("content-type")):
        raise HttpError(text_reply(415, MSG_415))
    try:
        text = req.body.decode("utf-8")
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant,
                           object_pairs_hook=_pairs_hook)
    except (UnicodeDecodeError, ValueError) as exc:
        detail = str(exc)
        if isinstance(exc, json.JSONDecodeError):
            detail = f"{exc.msg.lower()} at line {exc.lineno} column {exc.colno}"
        raise HttpError(text_reply(
            400, f"Failed to parse the request body as JSON: {detail}")) from None
    return value, BodyShape(text)


def parse_new_activity(shape: BodyShape, raw: Any, path: str) -> dict[str, Any]:
    """NewActivity as serde sees it: required keys, types, aliases (422 on any mismatch)."""
    body = shape.obj(raw, path, "NewActivity")
    if "notes" in body and "comment" in body:
        raise shape.fail(path, "duplicate field `notes`")
    if "symbol" in body and "asset" in body:
        raise shape.fail(path, "duplicate field `symbol`")
    item: dict[str, Any] = {}
    for key in ("accountId", "activityType", "activityDate", "currency"):
        item[key] = shape.req_str(body, key, path)
    for key in ("quantity", "unitPrice", "amount", "fee", "fxRate"):
        item[key] = shape.opt_decimal(body, key, path)
    for key in ("subtype", "metadata", "sourceSystem", "sourceRecordId", "sourceGroupId",
                "idempotencyKey", "id"):
        item[key] = shape.opt_str(body, key, path)
    item["notes"] = shape.opt_str(body, "notes" if "notes" in body else "comment", path)
    item["status"] = shape.opt_enum(body, "status", STATUSES, path)
    item["needsReview"] = shape.opt_bool(body, "needsReview", path)
    sym_key = "symbol" if "symbol" in body else "asset"
    sym = body.get(sym_key)
    if sym is not None:
        sym_path = f"{path}.{sym_key}" if path else sym_key
        sym_obj = shape.obj(sym, sym_path, "SymbolInput")
        item["symbol"] = {k: shape.opt_str(sym_obj, k, sym_path) for k in (
            "symbol", "exchangeMic", "quoteCcy", "instrumentType", "kind", "name", "id")}
        # An unknown quoteMode string is stored as sent, not refused
        # (docs/upstream.md#server-quirks).
        item["symbol"]["quoteMode"] = shape.opt_str(sym_obj, "quoteMode", sym_path)
    return item


def parse_activity_update(shape: BodyShape, raw: Any, path: str
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """ActivityUpdate: `id` plus the NewActivity fields; (raw body, parsed fields)."""
    body = shape.obj(raw, path, "ActivityUpdate")
    shape.req_str(body, "id", path)
    return body, parse_new_activity(shape, raw, path)


def parse_activity_date(value: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or RFC 3339 (converted to UTC); anything else is a 400."""
    text = value.strip()
    try:
        if _DATE_ONLY.match(text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        match = _RFC3339.match(text)
        if match:
            frac = (match.group(7) or "")[:7].ljust(7, "0") if match.group(7) else ""
            zone = match.group(8)
            zone = "+00:00" if zone in ("Z", "z") else zone
            iso = "{}-{}-{}T{}:{}:{}{}{}".format(*match.group(1, 2, 3, 4, 5, 6), frac, zone)
            return datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError:
        pass
    raise DomainError(MSG_BAD_DATE)
