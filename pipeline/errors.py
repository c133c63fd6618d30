"""The one exception type a stage turns into a one-sentence error and a non-zero exit."""


class PipelineError(Exception):
    """A problem the user can fix: the message says what is wrong, where, and what to do."""
