"""The one error a report piece raises on purpose: the page shows it as a note."""


class Unavailable(Exception):
    """A report piece that cannot be shown; the message says why."""
