"""One exception type whose message is meant for a person, not a traceback."""


class RnnscopeError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""
