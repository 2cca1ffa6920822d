"""Reading a posted HTML form (application/x-www-form-urlencoded): bounded in bytes and fields,
UTF-8 only, every refusal an InputError naming the form's field, so a route can show it in place."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from app.core.errors import InputError

FORM_FIELDS = 64  # the page's forms have about a dozen


async def read_form(request: Request, max_chars: int, field: str) -> dict[str, str]:
    """The form's fields (the last value of a repeated name); `field` names the form in errors."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InputError(f"send the view as a form (application/x-www-form-urlencoded), not {kind or 'no body'}",
                         field=field, status=415)
    limit = max_chars * 12 + 64 * 1024  # the longest text, %-encoded, plus the other fields
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InputError(f"the form is over {limit:,} bytes: the text is too long", field="text", status=413)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=FORM_FIELDS)
    except UnicodeDecodeError:
        raise InputError("the form is not UTF-8", field=field) from None
    except ValueError:
        raise InputError(f"the form has more than {FORM_FIELDS} fields", field=field) from None
    return dict(pairs)
