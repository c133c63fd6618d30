"""The one exception type a stage turns into a one-sentence error and a non-zero exit, and the OSErrors
that are the machine's state rather than a bug."""

from __future__ import annotations

import errno


class PipelineError(Exception):
    """A problem the user can fix: the message says what is wrong, where, and what to do."""


ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("write", "free some space on its disk"),
    errno.EDQUOT: ("write", "free some space within your disk quota"),
    errno.EROFS: ("write", "remount it read-write or run in a writable copy of the workspace"),
    errno.EACCES: ("access", "give this user access to it"),
    errno.EPERM: ("access", "give this user access to it"),
}


def describe_environment_error(err: OSError) -> str | None:
    """One sentence for a full disk or an unwritable path (None for any other OSError: that is a bug)."""
    if err.errno not in ENVIRONMENT_ERRNOS:
        return None
    verb, cause = ENVIRONMENT_ERRNOS[err.errno]
    where = err.filename if err.filename is not None else "an output file"
    code = errno.errorcode.get(err.errno, str(err.errno))
    return (
        f"cannot {verb} {where}: {err.strerror} ({code}); {cause}, then rerun "
        "(the outputs written before are intact, and an interrupted train stage resumes where it stopped)."
    )


def error_detail(err: BaseException, limit: int = 160) -> str:
    """`err`'s type and message on one line, cut to `limit` characters: to quote inside a one-sentence error."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"


def counted(count: int, noun: str, plural: str = "") -> str:
    """'1 example', '2 examples': a count and its noun, as a sentence says them."""
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"
