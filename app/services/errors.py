"""Errors of the trial API's use cases; `app/api/errors.py` turns them into problem details (RFC 9457)."""


class ServiceError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, parameter: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.parameter = parameter


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class InvalidInput(ServiceError):
    status = 422
    title = "Invalid request"


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"
