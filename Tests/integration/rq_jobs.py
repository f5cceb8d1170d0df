"""Job functions for the rq test: rq workers import them by name."""


def add(a: int, b: int) -> int:
    return a + b
