"""The one exception type that means "the user gave us something wrong" (exit status 2)."""


class InputError(ValueError):
    """Bad arguments or bad input: the message is one line naming the file or value and what is wrong."""
