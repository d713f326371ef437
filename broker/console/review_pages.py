"""A reviewer's and an owner's pages: the inbox, one request with the guard's dry run of each example query,
and approve (signed in the browser) or reject.

Signing stays with the person. The console hands the browser the exact bytes ``dsbroker review approve``
would sign (:func:`dsbroker.policy.signing.approval_message`); the page reads the person's PKCS#8 key file
with WebCrypto Ed25519 and posts back only the signature, which the console adds to the document
(:func:`~dsbroker.policy.signing.with_approval`) and sends. The key never reaches the console or the broker.
The page also shows the CLI command that does the same, for a key the browser must not see.
"""

from __future__ import annotations

import base64
import shlex

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker.cli.i18n import _
from broker.client.approving import unsigned_document
from broker.console.department_pages import request_state
from broker.console.pages import page, settings_of
from broker.v1 import access_request_service_pb2 as requests_pb
from dsbroker.errors import ConfigError
from dsbroker.policy.signing import approval_message, with_approval

PENDING = (requests_pb.ACCESS_REQUEST_STATE_SUBMITTED, requests_pb.ACCESS_REQUEST_STATE_REVIEWED)
ED25519_SIGNATURE_BYTES = 64


def inbox(request: Request) -> Response:
    """Requests awaiting a review (those the person may see), oldest first."""
    with settings_of(request).connection.client() as client:
        pending = [r for state in PENDING for r in client.list_requests(state=state, page_size=200)[0]]
    pending.sort(key=lambda r: r.create_time.ToDatetime())
    return page(request, "inbox.html", requests=pending, state_name=request_state)


def review(request: Request) -> Response:
    """One request in full: purpose, columns, the draft policy, the guard's dry runs, and the two forms."""
    settings = settings_of(request)
    with settings.connection.client() as client:
        current = client.get_request(request.path_params["id"])
    stage = _next_stage(current)
    return page(request, "review.html", item=current, stage=stage, state_name=request_state, use_name=column_use,
                key_id=settings.signing_key_id, signer=settings.signer or settings.connection.claims().get(
                    "department", ""))


def prepare_signature(request: Request) -> Response:
    """The signing page: the exact bytes to sign for this approver, and the command that does it instead."""
    from broker.console.app import posted

    settings, fields = settings_of(request), posted(request)
    name = request.path_params["id"]
    key_id, by = fields.get("key_id", "").strip(), fields.get("by", "").strip()
    with settings.connection.client() as client:
        current = client.get_request(name)
    role = _required_stage(current)
    stamp, message = approval_message(unsigned_document(current), key_id=key_id, role=role, by=by)
    command = ["dsbroker", "review", "approve", name.removeprefix("accessRequests/")]
    if settings.connection.profile:
        command += ["--profile", settings.connection.profile]
    command += ["--signing-key", "KEY.pem", "--key-id", key_id, "--by", by]
    return page(request, "sign.html", item=current, role=role, key_id=key_id, by=by, stamp=stamp,
                comment=fields.get("comment", ""), message=base64.b64encode(message).decode(),
                command=shlex.join(command))


def approve(request: Request) -> Response:
    """Add the browser's signature to the document the person signed and send it to the broker."""
    from broker.console.app import posted

    fields = posted(request)
    name = request.path_params["id"]
    signature = _signature(fields.get("signature", ""))
    with settings_of(request).connection.client() as client:
        current = client.get_request(name)
        role = _required_stage(current)
        if fields.get("role") != role:
            raise ConfigError(_("the request moved on while you signed: sign again"))
        document = with_approval(unsigned_document(current), key_id=fields.get("key_id", ""), role=role,
                                 by=fields.get("by", ""), stamp=fields.get("at", ""), signature=signature)
        client.approve_request(name, document, comment=fields.get("comment", ""))
    return RedirectResponse(f"/inbox/{name}", status_code=303)


def reject(request: Request) -> Response:
    """Reject the request with the reviewer's reason."""
    from broker.console.app import posted

    fields = posted(request)
    name = request.path_params["id"]
    with settings_of(request).connection.client() as client:
        client.reject_request(name, reason=fields.get("reason", ""))
    return RedirectResponse(f"/inbox/{name}", status_code=303)


def column_use(value: int) -> str:
    """A requested column's use as a word (group, filter, measure)."""
    return requests_pb.ColumnUse.Name(value).removeprefix("COLUMN_USE_").lower()


def _next_stage(current: requests_pb.AccessRequest) -> str:
    """The role whose approval the request awaits ("" when none does)."""
    stages, done = list(current.approval_stages), len(current.approvals)
    return stages[done] if current.state in PENDING and done < len(stages) else ""


def _required_stage(current: requests_pb.AccessRequest) -> str:
    stage = _next_stage(current)
    if not stage:
        raise ConfigError(_("{name} awaits no approval").format(name=current.name))
    return stage


def _signature(text: str) -> bytes:
    """The browser's Ed25519 signature (base64, 64 bytes); ConfigError for anything else."""
    try:
        signature = base64.b64decode(text, validate=True)
    except ValueError:
        signature = b""
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise ConfigError(_("the page sent no Ed25519 signature: choose your key file and sign again"))
    return signature


def routes() -> list[Route]:
    """The reviewer's and owner's routes."""
    return [Route("/inbox", inbox), Route("/inbox/{id}", review),
            Route("/inbox/{id}/sign", prepare_signature, methods=["POST"]),
            Route("/inbox/{id}/approve", approve, methods=["POST"]),
            Route("/inbox/{id}/reject", reject, methods=["POST"])]
