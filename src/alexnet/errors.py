"""The two exception types the command line turns into an exit status: bad input (2) and a stopped run."""


class InputError(ValueError):
    """Bad arguments or bad input: the message is one line naming the file or value and what is wrong."""


class TrainingStopped(RuntimeError):
    """A training run stopped before its end (a signal, a non-finite loss, a lost peer process), with the
    exit status the command returns and a one-line message that says what to do next."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def first_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message for a one-line error: its first line (its type when it has none), cut at a
    word boundary when longer than ``limit``."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
