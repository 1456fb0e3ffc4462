"""The owner's login: the admin token or a password, a signed session cookie, bearer tokens, CSRF.

* ``faceatlas web set-password`` stores a salted scrypt hash (never the password) in the data directory.
* A login sets ``faceatlas_session``: ``<payload>.<HMAC-SHA256>``, the payload holding the expiry and the
  session's CSRF token; HttpOnly, SameSite=Strict, ``Max-Age`` = the session's life. The signing key is a
  random file in the data directory, so sessions survive restarts and are shared by worker processes.
* API clients send ``Authorization: Bearer <admin token or password>`` instead; such requests carry no
  ambient credential, so they need no CSRF token.
* A cookie-authenticated POST/PUT/PATCH/DELETE must send the session's CSRF token in the
  ``X-CSRF-Token`` header (the pages' JavaScript does) or a ``csrf_token`` form field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from faceatlas.errors import FaceAtlasError

SESSION_COOKIE = "faceatlas_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 7 * 24 * 3600
PASSWORD_FILE = "web-password"
SESSION_KEY_FILE = "web-session-key"
MIN_PASSWORD_LENGTH = 8
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# scrypt cost: 2**14 x 8 x 1 takes ~50 ms and 16 MB, OWASP's minimum for interactive logins.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class AuthError(FaceAtlasError, PermissionError):
    """No valid login (401) or a state-changing request without its CSRF token (403)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class PasswordError(FaceAtlasError, ValueError):
    """A password that cannot be set (too short)."""


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64 fields) for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.strip().split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def set_password(data_dir: str | os.PathLike[str], password: str) -> Path:
    """Store the hash of the web login password in ``data_dir``; returns the file."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    path = Path(data_dir) / PASSWORD_FILE
    _write_private(path, hash_password(password) + "\n")
    return path


def _session_key(data_dir: Path) -> bytes:
    path = data_dir / SESSION_KEY_FILE
    if path.is_file():
        key = path.read_text().strip()
        if len(key) >= 32:
            return key.encode()
    key = secrets.token_urlsafe(48)
    _write_private(path, key + "\n")
    return key.encode()


@dataclass(frozen=True, slots=True)
class Session:
    expires: float
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Checks secrets and signs/reads session cookies for one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], admin_token: str) -> None:
        self.data_dir = Path(data_dir)
        self.admin_token = admin_token
        self._key = _session_key(self.data_dir)

    def check_secret(self, secret: str) -> bool:
        """The admin token or the password set with ``faceatlas web set-password``."""
        if not secret:
            return False
        if self.admin_token and hmac.compare_digest(secret.encode(), self.admin_token.encode()):
            return True
        path = self.data_dir / PASSWORD_FILE
        return path.is_file() and verify_password(secret, path.read_text())

    def new_session(self, seconds: int = SESSION_SECONDS) -> tuple[str, Session]:
        session = Session(time.time() + seconds, secrets.token_urlsafe(24))
        payload = _b64(json.dumps({"exp": session.expires, "csrf": session.csrf}).encode())
        return f"{payload}.{self._sign(payload)}", session

    def read_session(self, cookie: str | None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        payload, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(float(data["exp"]), str(data["csrf"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a request was authenticated as: a browser session (with its CSRF token) or a bearer client."""

    via: str  # "session" | "bearer"
    csrf: str = ""


def authenticate_request(
    auth: Authenticator,
    method: str,
    cookie: str | None,
    authorization: str | None,
    csrf_sent: str | None,
) -> Owner:
    """The owner behind a request, or :class:`AuthError` (401 no login, 403 missing CSRF token)."""
    if authorization and authorization.lower().startswith("bearer "):
        if auth.check_secret(authorization[7:].strip()):
            return Owner("bearer")
        raise AuthError("the bearer token is not valid")
    session = auth.read_session(cookie)
    if session is None:
        raise AuthError("log in first (a session cookie or Authorization: Bearer <admin token>)")
    if method.upper() not in SAFE_METHODS and not (
        csrf_sent and hmac.compare_digest(csrf_sent.encode(), session.csrf.encode())
    ):
        raise AuthError("missing or wrong CSRF token (send the X-CSRF-Token header)", status=403)
    return Owner("session", session.csrf)
