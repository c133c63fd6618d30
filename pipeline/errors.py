"""The one exception type a stage turns into a one-sentence error and a non-zero exit."""


class PipelineError(Exception):
    """A problem the user can fix: the message says what is wrong, where, and what to do."""


def error_detail(err: BaseException, limit: int = 160) -> str:
    """`err`'s type and message on one line, cut to `limit` characters: to quote inside a one-sentence error."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"
