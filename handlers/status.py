"""HTTP trigger: GET /api/status, the operator's view as JSON (function-key auth)."""

from __future__ import annotations

import json

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves it untyped


@bp.function_name("status")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.entrypoints.app import handle_status

    del req  # the status takes no input (the function key is checked by the host)
    code, body = handle_status()
    return func.HttpResponse(json.dumps(body, indent=2), status_code=code, mimetype="application/json")
