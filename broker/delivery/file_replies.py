"""Replies from intakes that only exchange files (DESIGN § 5 `files` delivery; issue 6).

Directory convention, per route with `delivery = "files"` (area A, `directory = D`):

    D/                          referral files the broker writes: `<type>-<referral_id>-<event_id>.<fmt>`
    D/replies/                  the intake drops its replies here (the broker creates it if missing)
    D/replies/processed/        replies applied, and idempotent repeats of them, under their own name
    D/replies/rejected/         refused replies, each with `<name>.error.json` beside it

A reply file is `*.json` (a common-schema reply plus a top-level `referral_id`) or `*.xml` (one
`Vastaus` document); both are described in `adapters.municipal.replies_file`. Writers must write
under a temporary name and rename into place, exactly as the broker does for referral files: names
starting with "." or ending in ".partial" or ".tmp" are never read, so a half-written file is not
mistaken for a broken one.

Each scan reads the area's files in the order they arrived (modification time, then name) and
applies each through `CaseService.apply_reply` with `area=A`, the same rules as
`POST /v1/referrals/{id}/replies` for A's intake: a case of another area is a 404, an invalid reply
a 422 (checked before a state that does not fit, 409), a repeated `reply_id` with the same body an
idempotent repeat. Outcomes:
- applied, or an idempotent repeat -> moved to `processed/`;
- refused -> moved to `rejected/`, and `<name>.error.json` written beside it:
  `{"errors": [{"loc", "msg", "type"}], "status", "file", "at"}`, with `status` as the HTTP API would
  answer: 400 not a readable document (not UTF-8, malformed JSON/XML, a DTD, not a regular file,
  unreadable), 413 over the body limit (exactly 1 MiB passes), 422 invalid, 404 no such case in
  this area, 409 does not fit the case's state or reuses a `reply_id` with another body. `loc`
  names the field (JSON) or element path (XML), never a value.
- An unreadable file (permissions) is refused like a malformed one rather than left in place: it
  cannot become readable without someone acting, and `rejected/` with its error file is where the
  intake's operators look. Directories, symlinks and FIFOs named like reply files are refused too,
  unread (a FIFO would block the reader, a symlink could point anywhere).
- Nothing is ever deleted or overwritten: a name already taken in `processed/` or `rejected/`
  gets a numeric suffix (`x.json` -> `x.1.json`). A move is a hard link plus unlink of the old name
  (no overwrite, even with two brokers scanning one directory), or a rename where links are not
  supported.
- A file that cannot be moved, or whose reply failed for a reason that is not the file's (the
  ledger unreachable), stays where it is, is logged, and is tried again at the next scan; a reply
  already applied is then an idempotent repeat.

Logs name the area, the file and the status, never the content; a file name that looks like it
holds an identity code is masked (in the error file too).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from adapters.municipal.replies_file import ReplyFileError, file_loc, parse_reply_file
from broker.cases.service import CaseService
from broker.config.settings import Settings
from broker.delivery.filedrop import write_atomically
from broker.domain.errors import Conflict, HandoffError, InvalidInput, NotFound
from broker.jobs.periodic import run_periodically
from broker.security.audit import Actor
from schemas.errors import ErrorItem, safe_loc
from schemas.hetu import mask_identity_codes

__all__ = ["PROCESSED_DIR", "REJECTED_DIR", "REPLIES_DIR", "FileReplyScanner", "ScanReport",
           "replies_directory"]

log = structlog.get_logger(__name__)

REPLIES_DIR = "replies"
PROCESSED_DIR = "processed"
REJECTED_DIR = "rejected"
ERROR_SUFFIX = ".error.json"
_SUFFIXES = (".json", ".xml")
_IGNORED_ENDINGS = (".partial", ".tmp")


def replies_directory(directory: Path) -> Path:
    """The inbound replies directory of a files route whose referral files go to `directory`."""
    return directory / REPLIES_DIR


@dataclass
class ScanReport:
    """What one scan did. `retried` files were left in place and are tried again next scan."""

    processed: int = 0
    duplicate: int = 0
    rejected: int = 0
    retried: int = 0


class _Refusal(Exception):
    def __init__(self, status: int, errors: list[ErrorItem]) -> None:
        super().__init__(f"refused with {status}")
        self.status = status
        self.errors = errors


class _NotRegular(Exception):
    pass


class _TooLarge(Exception):
    pass


def _safe_name(name: str) -> str:
    """The file name as logs and error files may show it: valid text, identity codes masked."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return mask_identity_codes(text)


def _is_candidate(name: str) -> bool:
    lowered = name.lower()
    return (not name.startswith(".") and not lowered.endswith(_IGNORED_ENDINGS)
            and lowered.endswith(_SUFFIXES))


def _list_candidates(replies: Path) -> list[str]:
    """Reply file names in arrival order (modification time, then name)."""
    replies.mkdir(parents=True, exist_ok=True)
    found: list[tuple[int, str]] = []
    with os.scandir(replies) as entries:
        for entry in entries:
            if not _is_candidate(entry.name):
                continue
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
            except FileNotFoundError:
                continue  # taken meanwhile (another scanner)
            found.append((mtime, entry.name))
    return [name for _mtime, name in sorted(found)]


def _read_capped(path: Path, limit: int) -> bytes:
    """Read a regular file of at most `limit` bytes, without following symlinks or blocking."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRegular from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotRegular
        if info.st_size > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _split_name(name: str) -> tuple[str, str]:
    stem, dot, suffix = name.rpartition(".")
    return (stem, dot + suffix) if stem else (name, "")


def _move_without_overwrite(src: Path, dest_dir: Path, *, keep_free: str = "") -> Path:
    """Move `src` into `dest_dir` under its name, or `<stem>.<n><suffix>` if that is taken.

    `keep_free` names a companion (e.g. ".error.json") that must not exist for the chosen name.
    """
    dest_dir.mkdir(exist_ok=True)
    stem, suffix = _split_name(src.name)
    for n in range(100_000):
        candidate = src.name if n == 0 else f"{stem}.{n}{suffix}"
        target = dest_dir / candidate
        if keep_free and os.path.lexists(dest_dir / f"{candidate}{keep_free}"):
            continue
        try:
            os.link(src, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            # Directories, and file systems without hard links: check, then rename.
            if os.path.lexists(target):
                continue
            os.rename(src, target)
            return target
        os.unlink(src)
        return target
    raise FileExistsError(errno.EEXIST, "no free name left", str(dest_dir))


def _error_document(errors: list[ErrorItem], status: int, name: str) -> bytes:
    doc = {"errors": [{**e, "loc": safe_loc(e["loc"])} for e in errors], "status": status,
           "file": _safe_name(name),
           "at": dt.datetime.now(dt.UTC).isoformat()}
    # "replace": a key the sender wrote may reach a `loc`; it must not stop the error file.
    return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8", "replace") + b"\n"


def _conflict_field(exc: Conflict) -> str:
    # The case logic raises one Conflict for both causes; its message says which.
    return "reply_id" if "reply_id" in exc.message else "status"


class FileReplyScanner:
    """Polls every files route's replies directory and applies what the intakes dropped there."""

    def __init__(self, settings: Settings, cases: CaseService, *, poll_interval_s: float = 1.0) -> None:
        self.settings = settings
        self.cases = cases
        self.poll_interval_s = poll_interval_s
        self._max_bytes = settings.server.max_body_bytes

    def directories(self) -> dict[Path, tuple[str, ...]]:
        """Replies directory -> the areas whose files route uses it (normally exactly one)."""
        out: dict[Path, tuple[str, ...]] = {}
        for route in self.settings.routes:
            if route.delivery != "files" or route.directory is None or route.area == "kela":
                continue
            replies = replies_directory(route.directory)
            out[replies] = (*out.get(replies, ()), route.area)
        return out

    async def run(self) -> None:
        """Sleep, scan, repeat, until cancelled; a failed scan is logged and tried again.

        The first scan waits one interval: start-up work (migrations, the transport) comes first, and
        a test that drives `scan_once` itself is never raced by the background job.
        """
        await run_periodically(self.scan_once, self.poll_interval_s, failure_event="reply_scan_failed",
                               wait_first=True)

    async def scan_once(self) -> ScanReport:
        report = ScanReport()
        for replies, areas in self.directories().items():
            if len(areas) > 1:
                log.warning("reply_directory_shared", areas=list(areas))
            try:
                names = await asyncio.to_thread(_list_candidates, replies)
            except OSError as exc:
                log.error("reply_directory_unavailable", area=areas[0], error=type(exc).__name__)
                continue
            for name in names:
                await self._one(replies, areas, name, report)
        return report

    async def _one(self, replies: Path, areas: tuple[str, ...], name: str, report: ScanReport) -> None:
        area = areas[0]
        safe = _safe_name(name)
        try:
            referral_id, data = await self._read(replies / name, name)
            area, created = await self._apply(areas, referral_id, data, name)
        except FileNotFoundError:
            return  # taken by another scanner between listing and reading
        except _Refusal as refusal:
            await self._reject(replies, area, name, refusal, report)
            return
        except Exception:
            log.exception("reply_file_failed", area=area, file=safe)
            report.retried += 1
            return
        status = 202 if created else 200
        try:
            await asyncio.to_thread(_move_without_overwrite, replies / name, replies / PROCESSED_DIR)
        except OSError as exc:
            log.warning("reply_file_move_failed", area=area, file=safe, status=status,
                        error=type(exc).__name__)
            report.retried += 1
            return
        if created:
            report.processed += 1
        else:
            report.duplicate += 1
        log.info("reply_file_processed", area=area, file=safe, status=status,
                 referral_id=referral_id, duplicate=not created)

    async def _read(self, path: Path, name: str) -> tuple[str, dict[str, Any]]:
        try:
            raw = await asyncio.to_thread(_read_capped, path, self._max_bytes)
        except FileNotFoundError:
            raise
        except _NotRegular:
            raise _Refusal(400, [{"loc": [], "msg": "not a regular file", "type": "not_a_file"}]) from None
        except _TooLarge:
            raise _Refusal(413, [{"loc": [], "msg": f"file larger than {self._max_bytes} bytes",
                                  "type": "too_large"}]) from None
        except OSError:
            raise _Refusal(400, [{"loc": [], "msg": "the file could not be read",
                                  "type": "file_unreadable"}]) from None
        try:
            return parse_reply_file(name, raw)
        except ReplyFileError as exc:
            raise _Refusal(400 if exc.malformed else 422, exc.errors) from None
        except Exception:
            # A pure function failed on this content: retrying cannot help, so refuse the file
            # (and log the failure as the bug it is) rather than meet it again at every scan.
            log.exception("reply_file_parse_failed", file=_safe_name(name))
            raise _Refusal(400, [{"loc": [], "msg": "the file could not be read as a reply",
                                  "type": "file_unprocessable"}]) from None

    async def _apply(self, areas: tuple[str, ...], referral_id: str, data: dict[str, Any],
                     name: str) -> tuple[str, bool]:
        """Apply for the (first) area that has the case; (area, created)."""
        for i, area in enumerate(areas):
            try:
                result = await self.cases.apply_reply(referral_id, data,
                                                      actor=Actor(f"files-{area}", "intake"), area=area)
            except NotFound:
                if i + 1 < len(areas):
                    continue
                raise _Refusal(404, [{"loc": file_loc(name, ["referral_id"]),
                                      "msg": "no such referral", "type": "not_found"}]) from None
            except InvalidInput as exc:
                raise _Refusal(422, [{**e, "loc": file_loc(name, e["loc"])} for e in exc.errors]
                               ) from None
            except Conflict as exc:
                raise _Refusal(409, [{"loc": file_loc(name, [_conflict_field(exc)]),
                                      "msg": exc.message, "type": "conflict"}]) from None
            except HandoffError as exc:
                if exc.status >= 500:
                    raise
                raise _Refusal(exc.status, [{"loc": [], "msg": exc.message, "type": exc.code}]) from None
            return area, result.created
        raise AssertionError("a replies directory always has an area")

    async def _reject(self, replies: Path, area: str, name: str, refusal: _Refusal,
                      report: ScanReport) -> None:
        safe = _safe_name(name)
        types = sorted({e["type"] for e in refusal.errors})
        try:
            moved = await asyncio.to_thread(_move_without_overwrite, replies / name,
                                            replies / REJECTED_DIR, keep_free=ERROR_SUFFIX)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("reply_file_move_failed", area=area, file=safe, status=refusal.status,
                        error=type(exc).__name__)
            report.retried += 1
            return
        report.rejected += 1
        log.info("reply_file_rejected", area=area, file=safe, status=refusal.status, types=types)
        try:
            await asyncio.to_thread(write_atomically, moved.parent, moved.name + ERROR_SUFFIX,
                                    _error_document(refusal.errors, refusal.status, name))
        except OSError as exc:
            log.error("reply_error_file_failed", area=area, file=safe, error=type(exc).__name__)
